# -*- test-case-name: tests.test_wsframes -*-
"""
Tests for L{wakeproxy.http.wsframes}: L{FrameScanner} over frames with every length encoding (7-bit, 16-bit,
64-bit), masked and unmasked, fed in one piece, byte by byte and in random pieces; data frames
(text, binary, continuation) counted apart from control frames (close, ping, pong).
"""

import os
import random
import struct

from twisted.trial.unittest import SynchronousTestCase

from wakeproxy.http.wsframes import FrameScanner, close_frame

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
DATA_OPCODES = (CONTINUATION, TEXT, BINARY)
CONTROL_OPCODES = (CLOSE, PING, PONG)


def frame(opcode: int, payload: bytes, mask: bool = False, fin: bool = True) -> bytes:
    """One WebSocket frame (RFC 6455 section 5.2), with the shortest length encoding for C{payload}."""
    first = (0x80 if fin else 0) | opcode
    size = len(payload)
    bit = 0x80 if mask else 0
    if size < 126:
        header = struct.pack("!BB", first, bit | size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", first, bit | 126, size)
    else:
        header = struct.pack("!BBQ", first, bit | 127, size)
    if mask:
        key = b"\x37\xfa\x21\x3d"
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        return header + key + payload
    return header + payload


#: payload sizes across the three length encodings and their edges
SIZES = (0, 1, 125, 126, 127, 65535, 65536, 70000)


def payload(size: int) -> bytes:
    """Payload bytes that look like frame headers (a ping, a text frame): they must not be read as frames."""
    pattern = frame(PING, b"") + frame(TEXT, b"x") + b"\x81\xfe\xff"
    return (pattern * (size // len(pattern) + 1))[:size]


def stream():
    """A conversation: every data opcode at every size, control frames between, masked and not."""
    frames = []
    for mask in (False, True):
        for size in SIZES:
            frames.append((TEXT if size % 2 else BINARY, frame(TEXT if size % 2 else BINARY, payload(size), mask)))
            frames.append((PING, frame(PING, payload(min(size, 125)), mask)))
        frames.append((TEXT, frame(TEXT, b"first part", mask, fin=False)))
        frames.append((PONG, frame(PONG, b"", mask)))
        frames.append((CONTINUATION, frame(CONTINUATION, payload(300), mask, fin=False)))
        frames.append((CONTINUATION, frame(CONTINUATION, b"last part", mask)))
    frames.append((CLOSE, close_frame(1000, b"bye")))
    return frames


class FrameScannerTests(SynchronousTestCase):
    def expected(self, frames):
        data = sum(1 for opcode, _ in frames if opcode in DATA_OPCODES)
        return data, len(frames) - data

    def feed_all(self, pieces):
        scanner = FrameScanner()
        returned = sum(scanner.feed(piece) for piece in pieces)
        return scanner, returned

    def test_each_frame_alone(self):
        """Every opcode, size and masking, in one piece: counted once, as data or as control."""
        for mask in (False, True):
            for opcode in DATA_OPCODES + CONTROL_OPCODES:
                for size in SIZES if opcode in DATA_OPCODES else (0, 1, 125):
                    scanner = FrameScanner()
                    found = scanner.feed(frame(opcode, payload(size), mask))
                    is_data = opcode in DATA_OPCODES
                    self.assertEqual((found, scanner.data_frames, scanner.control_frames),
                                     (int(is_data), int(is_data), int(not is_data)), (opcode, size, mask))

    def test_one_piece(self):
        frames = stream()
        scanner, returned = self.feed_all([b"".join(raw for _, raw in frames)])
        data, control = self.expected(frames)
        self.assertEqual((scanner.data_frames, scanner.control_frames), (data, control))
        self.assertEqual(returned, data)

    def test_frame_by_frame(self):
        """Each feed returns the data frames that begin in it."""
        scanner = FrameScanner()
        for opcode, raw in stream():
            self.assertEqual(scanner.feed(raw), int(opcode in DATA_OPCODES), opcode)

    def test_byte_by_byte(self):
        frames = stream()
        data_bytes = b"".join(raw for _, raw in frames)
        scanner = FrameScanner()
        returned = 0
        for k in range(len(data_bytes)):
            returned += scanner.feed(data_bytes[k:k + 1])
        data, control = self.expected(frames)
        self.assertEqual((scanner.data_frames, scanner.control_frames), (data, control))
        self.assertEqual(returned, data)

    def test_data_frame_counted_where_its_header_completes(self):
        """A frame is counted by the feed that completes its header, and only once."""
        raw = frame(TEXT, payload(70000), mask=True)  # 2 + 8 + 4 bytes of header
        for cut in range(1, 15):
            scanner = FrameScanner()
            self.assertEqual(scanner.feed(raw[:cut]), 1 if cut >= 14 else 0, cut)
            self.assertEqual(scanner.feed(raw[cut:]), 0 if cut >= 14 else 1, cut)
            self.assertEqual(scanner.data_frames, 1)

    def test_random_pieces(self):
        frames = stream()
        data_bytes = b"".join(raw for _, raw in frames)
        data, control = self.expected(frames)
        rng = random.Random(10)
        for _ in range(50):
            pieces = []
            k = 0
            while k < len(data_bytes):
                size = rng.choice((1, 2, 3, 5, 13, 127, 4096, 70001))
                pieces.append(data_bytes[k:k + size])
                k += size
            scanner, returned = self.feed_all(pieces)
            self.assertEqual((scanner.data_frames, scanner.control_frames, returned), (data, control, data))

    def test_random_payloads(self):
        """Payload bytes are never read, whatever they hold."""
        rng = random.Random(6455)
        frames = []
        for _ in range(200):
            opcode = rng.choice(DATA_OPCODES + CONTROL_OPCODES)
            size = rng.randrange(126) if opcode in CONTROL_OPCODES else rng.choice((rng.randrange(300), 65536))
            frames.append((opcode, frame(opcode, os.urandom(size), rng.random() < 0.5)))
        data_bytes = b"".join(raw for _, raw in frames)
        for size in (1, 7, len(data_bytes)):
            scanner, returned = self.feed_all([data_bytes[k:k + size] for k in range(0, len(data_bytes), size)])
            self.assertEqual((scanner.data_frames, scanner.control_frames), self.expected(frames), size)

    def test_empty_feed(self):
        scanner = FrameScanner()
        self.assertEqual(scanner.feed(b""), 0)
        raw = frame(TEXT, b"abc")
        self.assertEqual(scanner.feed(raw[:1]), 0)
        self.assertEqual(scanner.feed(b""), 0)
        self.assertEqual(scanner.feed(raw[1:]), 1)


class CloseFrameTests(SynchronousTestCase):
    def test_going_away(self):
        self.assertEqual(close_frame(), b"\x88\x0c\x03\xe9going away")
        self.assertEqual(close_frame(1001, b"going away"), close_frame())

    def test_code_and_reason(self):
        raw = close_frame(1000, b"")
        self.assertEqual(raw, b"\x88\x02\x03\xe8")

    def test_long_reason_is_cut_to_a_control_frame(self):
        raw = close_frame(1001, b"r" * 500)
        self.assertEqual(raw[1], 125)
        self.assertEqual(len(raw), 127)

    def test_scanned_as_control(self):
        scanner = FrameScanner()
        self.assertEqual(scanner.feed(close_frame()), 0)
        self.assertEqual(scanner.control_frames, 1)
