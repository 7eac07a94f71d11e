# -*- test-case-name: tests.test_relay -*-
"""
The answers wakeproxy makes itself on the proxy listener, as values: problem+json errors (RFC 9457), the
redirect home, the loading page and its status JSON. The relay turns an L{Answer} into bytes on the wire
(L{Answer.encode}); nothing else writes wakeproxy's own responses there.
"""

from __future__ import annotations

from typing import Optional

from .loadingpage import page, status_body
from .problem import problem_body
from .headers import reason_phrase

__all__ = ["Answer", "loading", "problem", "redirect", "status"]


class Answer:
    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers: tuple, body: bytes):
        self.status = status
        self.headers = headers
        self.body = body

    def encode(self, head_only: bool = False, close: bool = False) -> bytes:
        lines = [b"HTTP/1.1 %d %s" % (self.status, reason_phrase(self.status))]
        lines.extend(name + b": " + value for name, value in self.headers)
        lines.append(b"Content-Length: %d" % len(self.body))
        if close:
            lines.append(b"Connection: close")
        head = b"\r\n".join(lines) + b"\r\n\r\n"
        return head if head_only else head + self.body


def problem(status: int, detail: str, retry_after: Optional[int] = None, **extra) -> Answer:
    headers = [(b"Content-Type", b"application/problem+json"), (b"Cache-Control", b"no-store")]
    if retry_after is not None:
        headers.append((b"Retry-After", b"%d" % int(retry_after)))
    if status == 405:
        headers.append((b"Allow", b"GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"))
    return Answer(status, tuple(headers), problem_body(status, detail, **extra))


def redirect(location: bytes) -> Answer:
    return Answer(302, ((b"Location", location), (b"Cache-Control", b"no-store")), b"")


def loading(name: str) -> Answer:
    return Answer(503, ((b"Content-Type", b"text/html; charset=utf-8"), (b"Cache-Control", b"no-store"),
                        (b"Retry-After", b"1")), page(name))


def status(name: str, ready: bool, state: dict) -> Answer:
    return Answer(200, ((b"Content-Type", b"application/json"), (b"Cache-Control", b"no-store")),
                  status_body(name, ready, state))
