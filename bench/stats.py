"""Percentiles and summaries of latency samples (pure functions, no numpy)."""

from __future__ import annotations

from typing import Iterable, Optional, Sequence

__all__ = ["percentile", "summary"]


def percentile(values: Iterable[float], q: float) -> Optional[float]:
    """The C{q}-th percentile (0..100) by linear interpolation between closest ranks; None when empty."""
    data: Sequence[float] = sorted(values)
    if not data:
        return None
    if len(data) == 1:
        return data[0]
    rank = (len(data) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (rank - low)


def summary(values: Iterable[float]) -> dict:
    """n, p50, p99, min, max and mean of C{values} (None for each when there are none)."""
    data = sorted(values)
    if not data:
        return {"n": 0, "p50": None, "p99": None, "min": None, "max": None, "mean": None}
    return {
        "n": len(data),
        "p50": percentile(data, 50),
        "p99": percentile(data, 99),
        "min": data[0],
        "max": data[-1],
        "mean": sum(data) / len(data),
    }
