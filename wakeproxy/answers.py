# -*- test-case-name: tests.test_relay -*-
"""
Every answer wakeproxy makes itself, written here and nowhere else: problem+json errors (RFC 9457), JSON
documents, the redirect home, the loading page and its status JSON.

On the proxy listener an answer is a value, L{Answer}, that the relay encodes onto the wire
(L{Answer.encode}); on the deploy API listener L{write_problem} and L{write_json} write to a twisted.web
request. L{for_wake_failure} is the one mapping of a failed wake to its problem, for both listeners.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple, Optional

from wakeproxy.http.loadingpage import page, status_body

__all__ = ["Answer", "Problem", "for_wake_failure", "loading", "problem", "problem_body", "reason_phrase",
           "redirect", "status", "write_json", "write_problem"]

_REASONS = {
    100: b"Continue", 101: b"Switching Protocols", 103: b"Early Hints", 200: b"OK", 201: b"Created",
    202: b"Accepted", 204: b"No Content", 206: b"Partial Content", 301: b"Moved Permanently", 302: b"Found",
    303: b"See Other", 304: b"Not Modified", 307: b"Temporary Redirect", 308: b"Permanent Redirect",
    400: b"Bad Request", 401: b"Unauthorized", 403: b"Forbidden", 404: b"Not Found",
    405: b"Method Not Allowed", 408: b"Request Timeout", 409: b"Conflict", 410: b"Gone",
    413: b"Content Too Large", 415: b"Unsupported Media Type", 417: b"Expectation Failed",
    422: b"Unprocessable Content", 424: b"Failed Dependency", 429: b"Too Many Requests",
    431: b"Request Header Fields Too Large", 500: b"Internal Server Error", 502: b"Bad Gateway",
    503: b"Service Unavailable", 504: b"Gateway Timeout", 505: b"HTTP Version Not Supported",
}


def reason_phrase(status: int) -> bytes:
    return _REASONS.get(status, b"Status")


def problem_body(status: int, detail: str, title: Optional[str] = None, **extra: Any) -> bytes:
    """The JSON document for C{status} with a human C{detail}; C{extra} members are added as they are."""
    doc = {"type": "about:blank", "title": title or reason_phrase(status).decode("ascii"),
           "status": status, "detail": detail}
    doc.update(extra)
    return json.dumps(doc).encode("utf-8") + b"\n"


class Problem(NamedTuple):
    """A problem answer before it is written: the same on either listener."""
    status: int
    detail: str
    retry_after: Optional[int] = None
    extra: dict = {}


def for_wake_failure(error) -> Problem:
    """The answer to a request whose wake failed with C{error} (a L{wakeproxy.waking.waker.WakeFailure})."""
    retry_after = error.retry_after if error.retry_after is not None else (5 if error.status >= 503 else None)
    return Problem(error.status, error.detail, retry_after, {"phase": error.phase} if error.phase else {})


# the deploy API listener: twisted.web requests not yet started

def _write(request, status: int, content_type: bytes, body: bytes, headers: Optional[dict]) -> None:
    request.setResponseCode(status, reason_phrase(status))
    request.setHeader(b"content-type", content_type)
    request.setHeader(b"content-length", b"%d" % len(body))
    request.setHeader(b"cache-control", b"no-store")
    for name, value in (headers or {}).items():
        request.setHeader(name, value)
    if request.method != b"HEAD":
        request.write(body)
    request.finish()


def write_problem(request, status: int, detail: str, retry_after: Optional[int] = None,
                  headers: Optional[dict] = None, **extra: Any) -> None:
    """Answer C{request} with a problem document and finish it."""
    headers = dict(headers or {})
    if retry_after is not None:
        headers[b"retry-after"] = b"%d" % int(retry_after)
    _write(request, status, b"application/problem+json", problem_body(status, detail, **extra), headers)


def write_json(request, status: int, doc: Any, headers: Optional[dict] = None) -> None:
    """Answer C{request} with C{doc} as JSON and finish it."""
    _write(request, status, b"application/json", json.dumps(doc).encode("utf-8") + b"\n", headers)


# the proxy listener: values the relay encodes

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
