# -*- test-case-name: tests.test_chunked -*-
"""
Chunked bodies (RFC 9112 section 7.1), followed as they pass through the relay:

  - L{ChunkScanner}: walks a chunked body (sizes, extensions, trailers) without copying it; can also hand
    out the payload (for an HTTP/1.0 client, which cannot read chunked).
  - L{chunk}: one chunk holding some bytes (to frame a close-delimited body for a client).
"""

from __future__ import annotations

from wakeproxy.http.wire import WireError

__all__ = ["MAX_CHUNK_LINE", "ChunkError", "ChunkScanner", "chunk"]

#: longest chunk-size line (size, extensions) or trailer line accepted
MAX_CHUNK_LINE = 4096


class ChunkError(WireError):
    """A chunked body that cannot be relayed: 400, and why."""

    def __init__(self, detail: str):
        WireError.__init__(self, 400, detail)


class ChunkScanner:
    """
    Follows a chunked body through any split of its bytes. C{feed(data)} returns how many bytes of
    C{data} belong to the body; C{done} is set once the last chunk and the trailers have passed. With
    C{decode}, the payload bytes are collected in C{payload} (a list the caller empties).
    """

    __slots__ = ("done", "payload_bytes", "_left", "_line", "_state", "_decode", "payload")

    _SIZE, _DATA, _DATA_END, _TRAILER = range(4)

    def __init__(self, decode: bool = False):
        self.done = False
        self.payload_bytes = 0
        self._left = 0
        self._line = b""
        self._state = self._SIZE
        self._decode = decode
        self.payload: list = []

    def feed(self, data: bytes) -> int:
        i = 0
        n = len(data)
        while i < n and not self.done:
            state = self._state
            if state == self._DATA:
                take = min(self._left, n - i)
                if self._decode:
                    self.payload.append(data[i:i + take])
                i += take
                self._left -= take
                if self._left == 0:
                    self._state = self._DATA_END
                continue
            end = data.find(b"\n", i)
            if end < 0:
                self._line += data[i:]
                if len(self._line) > MAX_CHUNK_LINE:
                    raise ChunkError("a chunk-size or trailer line is longer than {} bytes".format(MAX_CHUNK_LINE))
                return n
            line = self._line + data[i:end]
            self._line = b""
            i = end + 1
            if len(line) > MAX_CHUNK_LINE:
                raise ChunkError("a chunk-size or trailer line is longer than {} bytes".format(MAX_CHUNK_LINE))
            if line.endswith(b"\r"):
                line = line[:-1]
            else:
                raise ChunkError("a chunked body line does not end in CRLF")
            if state == self._SIZE:
                size = line.split(b";", 1)[0].strip(b" \t")
                if not size or len(size) > 16 or size.strip(b"0123456789abcdefABCDEF"):
                    raise ChunkError("bad chunk size {!r}".format(line[:32].decode("latin-1")))
                self._left = int(size, 16)
                self.payload_bytes += self._left
                self._state = self._DATA if self._left else self._TRAILER
            elif state == self._DATA_END:
                if line:
                    raise ChunkError("a chunk is longer than its size says")
                self._state = self._SIZE
            else:  # trailer section: field lines until an empty line
                if not line:
                    self.done = True
        return i


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body holding C{data} (not empty)."""
    return b"%x\r\n%s\r\n" % (len(data), data)
