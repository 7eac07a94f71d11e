# -*- test-case-name: tests.test_api_unit -*-
"""
Prometheus metrics in the text exposition format (0.0.4), without a client library: counters, gauges
and histograms with a fixed, low-cardinality label set. One L{Registry} per process, injected.
"""

from __future__ import annotations

from typing import Callable, Iterable, Optional

__all__ = ["Counter", "Gauge", "Histogram", "Registry"]

WAKE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def _labels(names: tuple[str, ...], values: tuple[str, ...], extra: str = "") -> str:
    parts = ['{}="{}"'.format(n, v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n"))
             for n, v in zip(names, values)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


class _Metric:
    kind = ""

    def __init__(self, name: str, help: str, labels: Iterable[str] = ()):
        self.name = name
        self.help = help
        self.label_names = tuple(labels)

    def header(self) -> list[str]:
        return ["# HELP {} {}".format(self.name, self.help), "# TYPE {} {}".format(self.name, self.kind)]


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name, help, labels=()):
        _Metric.__init__(self, name, help, labels)
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def render(self) -> list[str]:
        return self.header() + ["{}{} {:g}".format(self.name, _labels(self.label_names, k), v)
                                for k, v in sorted(self.values.items())]


class Gauge(_Metric):
    """A gauge read at scrape time from a function returning C{{label values: value}}."""

    kind = "gauge"

    def __init__(self, name, help, read: Callable[[], dict], labels=()):
        _Metric.__init__(self, name, help, labels)
        self.read = read

    def render(self) -> list[str]:
        return self.header() + ["{}{} {:g}".format(self.name, _labels(self.label_names, k), v)
                                for k, v in sorted(self.read().items())]


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, name, help, labels=(), buckets=WAKE_BUCKETS):
        _Metric.__init__(self, name, help, labels)
        self.buckets = tuple(buckets)
        self.series: dict[tuple[str, ...], list] = {}

    def observe(self, value: float, *labels: str) -> None:
        series = self.series.get(labels)
        if series is None:
            series = self.series[labels] = [[0] * len(self.buckets), 0, 0.0]
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                series[0][i] += 1
        series[1] += 1
        series[2] += value

    def render(self) -> list[str]:
        lines = self.header()
        for key, (counts, count, total) in sorted(self.series.items()):
            for bound, n in zip(self.buckets, counts):
                lines.append("{}_bucket{} {}".format(self.name, _labels(self.label_names, key, 'le="{:g}"'.format(bound)), n))
            lines.append("{}_bucket{} {}".format(self.name, _labels(self.label_names, key, 'le="+Inf"'), count))
            lines.append("{}_sum{} {:g}".format(self.name, _labels(self.label_names, key), total))
            lines.append("{}_count{} {}".format(self.name, _labels(self.label_names, key), count))
        return lines


class Registry:
    """The process's metrics; L{render} gives the exposition text."""

    def __init__(self) -> None:
        self._metrics: list[_Metric] = []

    def add(self, metric: _Metric) -> _Metric:
        self._metrics.append(metric)
        return metric

    def get(self, name: str) -> Optional[_Metric]:
        for metric in self._metrics:
            if metric.name == name:
                return metric
        return None

    def render(self) -> bytes:
        lines: list[str] = []
        for metric in self._metrics:
            lines.extend(metric.render())
        return ("\n".join(lines) + "\n").encode("utf-8")
