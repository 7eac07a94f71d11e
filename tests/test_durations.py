# -*- test-case-name: tests.test_durations -*-
"""
Tests for L{wakeproxy.durations.parse_duration}: Go-style durations and plain seconds (table-driven;
each case is named in its assertion message).
"""

from twisted.trial.unittest import SynchronousTestCase

from wakeproxy.durations import parse_duration


class ParseDurationTests(SynchronousTestCase):
    """Tests for L{parse_duration}."""

    def test_valid(self):
        cases = [
            ("90", 90.0),
            ("1.5", 1.5),
            ("0", 0.0),
            ("0.25", 0.25),
            ("250ms", 0.25),
            ("500ms", 0.5),
            ("30s", 30.0),
            ("1.5s", 1.5),
            ("0s", 0.0),
            ("1m", 60.0),
            ("1m30s", 90.0),
            ("2h", 7200.0),
            ("1h2m3s", 3723.0),
            ("1h30m", 5400.0),
            ("1s500ms", 1.5),
            (" 5s ", 5.0),
            ("\t10\n", 10.0),
            ("30S", 30.0),
            ("250MS", 0.25),
        ]
        for text, seconds in cases:
            result = parse_duration(text)
            self.assertIsInstance(result, float, repr(text))
            self.assertAlmostEqual(result, seconds, msg=repr(text))

    def test_invalid(self):
        """Each error is a ValueError whose message quotes the input."""
        cases = [
            "",
            "   ",
            "abc",
            "5x",
            "-1",
            "-1s",
            "s",
            "ms",
            "1m 30s",
            "1m30",
            "30s1",
            "1.5.3s",
            "1,5s",
            "nan",
            "NaN",
            "inf",
            "-inf",
            "infinity",
            "1e400",
            "5 s",
            "h1",
        ]
        for text in cases:
            with self.assertRaises(ValueError, msg=repr(text)) as raised:
                parse_duration(text)
            message = str(raised.exception)
            self.assertIn(repr(text), message, repr(text))
            self.assertIn("not a duration", message, repr(text))
