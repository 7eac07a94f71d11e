# -*- test-case-name: tests.test_wsframes -*-
"""
WebSocket frame headers (RFC 6455 section 5.2), read as they stream past: the relay counts data frames
(text, binary, continuation) as activity, and control frames (ping, pong, close) not. Payloads are
skipped, never copied or unmasked.
"""

from __future__ import annotations

import struct

__all__ = ["FrameScanner", "close_frame"]

_CONTROL = 0x8


class FrameScanner:
    """C{feed(data)} returns how many data frames begin in C{data}; any split of the stream works."""

    __slots__ = ("_skip", "_head", "data_frames", "control_frames")

    def __init__(self):
        self._skip = 0  # payload bytes of the current frame still to pass
        self._head = b""  # an incomplete frame header
        self.data_frames = 0
        self.control_frames = 0

    @property
    def at_boundary(self) -> bool:
        """Between two frames (a frame of one's own may be written into the stream now)."""
        return not self._skip and not self._head

    def feed(self, data: bytes) -> int:
        n = len(data)
        i = 0
        found = 0
        if self._skip:
            if self._skip >= n:
                self._skip -= n
                return 0
            i = self._skip
            self._skip = 0
        while i < n:
            if self._head:
                data = self._head + data[i:]
                n = len(data)
                i = 0
                self._head = b""
            if n - i < 2:
                self._head = data[i:]
                break
            b1 = data[i + 1]
            size = b1 & 0x7F
            need = 2 + (4 if b1 & 0x80 else 0) + (2 if size == 126 else 8 if size == 127 else 0)
            if n - i < need:
                self._head = data[i:]
                break
            if size == 126:
                size = struct.unpack_from("!H", data, i + 2)[0]
            elif size == 127:
                size = struct.unpack_from("!Q", data, i + 2)[0]
            if data[i] & _CONTROL:
                self.control_frames += 1
            else:
                found += 1
            i += need + size
            if i > n:
                self._skip = i - n
                break
        self.data_frames += found
        return found


def close_frame(code: int = 1001, reason: bytes = b"going away") -> bytes:
    """An unmasked close frame, as a server (or wakeproxy in its place) sends it to a client."""
    payload = struct.pack("!H", code) + reason[:123]
    return bytes((0x88, len(payload))) + payload
