# -*- test-case-name: tests.test_accesslog -*-
"""
The proxy listener's access log (C{--access-log FILE|-}, C{--access-log-format json|combined}): one line
per request and per tunnel, written when the exchange ends: time, client, instance, method, target,
status, bytes each way, duration, whether it had to wake the instance and the wake's phases, and (json)
the serving process's pid, which tells C{--workers} processes apart (they append to the same file).

Also C{json_observer}, for C{twistd --logger wakeproxy.http.accesslog.json_observer}: wakeproxy's own log as
one JSON object per event (Twisted's JSON log format, RFC 7464 records) on standard output.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Optional, TextIO

__all__ = ["AccessLog", "json_observer"]


class AccessLog:
    def __init__(self, out: TextIO, fmt: str = "json"):
        if fmt not in ("json", "combined"):
            raise ValueError("access log format: 'json' or 'combined', not {!r}".format(fmt))
        self._out = out
        self._combined = fmt == "combined"
        self._pid = os.getpid()  # which process serves (--workers: each process builds its own log)

    @classmethod
    def open(cls, target: str, fmt: str = "json") -> "AccessLog":
        out = sys.stdout if target == "-" else open(target, "a", buffering=1, encoding="utf-8")
        return cls(out, fmt)

    def record(self, exchange, now: float) -> None:
        head = exchange.head
        client = exchange.client
        entry = {
            "time": round(now, 3),
            "client": client.peer_ip,
            "instance": exchange.instance,
            "method": head.method.decode("latin-1"),
            "target": head.target.decode("latin-1"),
            "version": head.version,
            "status": exchange.status,
            "bytes_in": exchange.bytes_in,
            "bytes_out": exchange.bytes_out,
            "duration_ms": round((now - exchange.began) * 1000, 1),
            "tunnel": exchange.tunnel,
            "woke": exchange.woke is not None,
            "pid": self._pid,
        }
        if exchange.woke is not None:
            entry["wake"] = exchange.woke.decode("ascii")
        if self._combined:
            self._out.write(_combined(entry, head) + "\n")
        else:
            self._out.write(json.dumps(entry, separators=(",", ":")) + "\n")

    def close(self) -> None:
        if self._out is not sys.stdout:
            self._out.close()


def _combined(entry: dict, head) -> str:
    """Apache's Combined Log Format, then wakeproxy's fields as key=value."""
    stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(entry["time"]))
    referer = head.noted.get(b"referer")
    agent = head.noted.get(b"user-agent")
    return '{} - - [{}] "{} {} HTTP/{}" {} {} "{}" "{}" instance={} duration_ms={} bytes_in={} woke={}{}'.format(
        entry["client"], stamp, entry["method"], entry["target"], entry["version"], entry["status"] or "-",
        entry["bytes_out"], _quoted(referer), _quoted(agent), entry["instance"] or "-", entry["duration_ms"],
        entry["bytes_in"], int(entry["woke"]), " tunnel=1" if entry["tunnel"] else "")


def _quoted(value: Optional[bytes]) -> str:
    if not value:
        return "-"
    return value.decode("latin-1").replace("\\", "\\\\").replace('"', '\\"')


def json_observer():
    """C{twistd --logger wakeproxy.http.accesslog.json_observer}: wakeproxy's log as JSON on standard output."""
    from twisted.logger import jsonFileLogObserver

    return jsonFileLogObserver(sys.stdout)
