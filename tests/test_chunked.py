# -*- test-case-name: tests.test_chunked -*-
"""Tests for L{wakeproxy.http.chunked}: L{ChunkScanner} through every split of a chunked body, and L{chunk}."""

from twisted.trial.unittest import SynchronousTestCase

from wakeproxy.http.chunked import MAX_CHUNK_LINE, ChunkError, ChunkScanner, chunk
from wakeproxy.http.wire import WireError

#: a chunked body with extensions and trailers (what comes after it belongs to the next message)
CHUNKED = (b"5;name=value\r\nhello\r\n"
           b"0A ; quoted=\"a;b\"\r\n0123456789\r\n"
           b"1\r\n\n\r\n"
           b"0;last\r\nTrailer-One: 1\r\ntrailer-two:  two \r\n\r\n")
PAYLOAD = b"hello0123456789\n"
NEXT = b"GET /next HTTP/1.1\r\n"


class ChunkScannerTests(SynchronousTestCase):
    def scan(self, pieces, decode=False):
        """Feed C{pieces}; return (bytes used in total, the piece index where the body ended, scanner)."""
        scanner = ChunkScanner(decode=decode)
        used = 0
        ended = None
        for index, piece in enumerate(pieces):
            if scanner.done:
                break
            took = scanner.feed(piece)
            self.assertTrue(0 <= took <= len(piece))
            if not scanner.done:
                self.assertEqual(took, len(piece), "a piece before the end is used whole")
            elif ended is None:
                ended = index
            used += took
        return used, ended, scanner

    def test_one_piece(self):
        used, _, scanner = self.scan([CHUNKED + NEXT])
        self.assertTrue(scanner.done)
        self.assertEqual(used, len(CHUNKED))
        self.assertEqual(scanner.payload_bytes, len(PAYLOAD))

    def test_every_split(self):
        """Cut in two and in three at every pair of points: the same boundary each time."""
        data = CHUNKED + NEXT
        n = len(data)
        for i in range(n + 1):
            for j in range(i, n + 1):
                used, _, scanner = self.scan([data[:i], data[i:j], data[j:]])
                self.assertTrue(scanner.done, (i, j))
                self.assertEqual(used, len(CHUNKED), (i, j))

    def test_byte_by_byte(self):
        data = CHUNKED + NEXT
        used, ended, scanner = self.scan([data[k:k + 1] for k in range(len(data))])
        self.assertTrue(scanner.done)
        self.assertEqual(used, len(CHUNKED))
        self.assertEqual(ended, len(CHUNKED) - 1, "done on the last byte of the body, not before")

    def test_not_done_before_the_end(self):
        for cut in range(len(CHUNKED)):
            scanner = ChunkScanner()
            self.assertEqual(scanner.feed(CHUNKED[:cut]), cut)
            self.assertFalse(scanner.done, cut)

    def test_decode(self):
        """Decode mode hands out the payload, whatever the split."""
        data = CHUNKED + NEXT
        for size in (1, 2, 3, 7, len(data)):
            pieces = [data[k:k + size] for k in range(0, len(data), size)]
            scanner = ChunkScanner(decode=True)
            payload = []
            for piece in pieces:
                if scanner.done:
                    break
                scanner.feed(piece)
                payload.extend(scanner.payload)
                scanner.payload.clear()
            self.assertTrue(scanner.done)
            self.assertEqual(b"".join(payload), PAYLOAD, size)

    def test_no_payload_without_decode(self):
        scanner = ChunkScanner()
        scanner.feed(CHUNKED)
        self.assertEqual(scanner.payload, [])

    def test_empty_body(self):
        scanner = ChunkScanner()
        self.assertEqual(scanner.feed(b"0\r\n\r\nrest"), 5)
        self.assertTrue(scanner.done)

    def test_bad(self):
        long_line = b"5;" + b"x" * MAX_CHUNK_LINE
        cases = [
            ("not hex", b"x\r\n"),
            ("empty size", b"\r\nhello\r\n"),
            ("0x prefix", b"0x5\r\nhello\r\n0\r\n\r\n"),
            ("negative", b"-5\r\nhello\r\n"),
            ("seventeen digits", b"1" * 17 + b"\r\n"),
            ("bare LF after the size", b"5\nhello\r\n0\r\n\r\n"),
            ("bare LF after the data", b"5\r\nhello\n0\r\n\r\n"),
            ("data longer than its size", b"5\r\nhello!\r\n0\r\n\r\n"),
            ("a long size line with its end", long_line + b"\r\n"),
            ("a long size line without its end", long_line),
            ("a long trailer line", b"0\r\nX-T: " + b"t" * MAX_CHUNK_LINE + b"\r\n\r\n"),
            ("a bare LF ending the trailers", b"0\r\nX-T: 1\r\n\n"),
        ]
        for name, data in cases:
            for size in (1, len(data)):
                scanner = ChunkScanner()
                with self.assertRaises(ChunkError, msg="{} (pieces of {})".format(name, size)) as caught:
                    for k in range(0, len(data), size):
                        scanner.feed(data[k:k + size])
                self.assertEqual(caught.exception.status, 400, name)
                self.assertIsInstance(caught.exception, WireError)

    def test_longest_line_accepted(self):
        line = b"5;" + b"x" * (MAX_CHUNK_LINE - 3) + b"\r"
        self.assertEqual(len(line), MAX_CHUNK_LINE)
        scanner = ChunkScanner()
        data = line + b"\nhello\r\n0\r\n\r\n"
        self.assertEqual(scanner.feed(data), len(data))
        self.assertTrue(scanner.done)

    def test_chunk(self):
        self.assertEqual(chunk(b"hello"), b"5\r\nhello\r\n")
        self.assertEqual(chunk(b"x" * 26), b"1a\r\n" + b"x" * 26 + b"\r\n")
        scanner = ChunkScanner(decode=True)
        scanner.feed(chunk(b"abc") + chunk(b"d" * 300) + b"0\r\n\r\n")
        self.assertTrue(scanner.done)
        self.assertEqual(b"".join(scanner.payload), b"abc" + b"d" * 300)
