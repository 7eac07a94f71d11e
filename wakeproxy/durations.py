# -*- test-case-name: tests.test_durations -*-
"""Go-style durations (C{500ms}, C{30s}, C{1m30s}, C{2h}) and plain seconds, as used in options and labels."""

import re

__all__ = ["parse_duration"]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")


def parse_duration(text: str) -> float:
    """
    Seconds from C{"90"}, C{"1.5"}, C{"250ms"}, C{"30s"}, C{"1m30s"} or C{"2h"}.
    Raise C{ValueError} with a sentence saying what is accepted.
    """
    value = text.strip().lower()
    try:
        seconds = float(value)
    except ValueError:
        pos = 0
        seconds = 0.0
        for match in _PART.finditer(value):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _UNITS[match.group(2)]
            pos = match.end()
        if pos != len(value) or not value:
            raise ValueError("{!r} is not a duration: use seconds or units like 500ms, 30s, 1m30s, 2h".format(text))
    if seconds < 0 or seconds != seconds or seconds == float("inf"):
        raise ValueError("{!r} is not a duration: it must be a finite number of seconds >= 0".format(text))
    return seconds
