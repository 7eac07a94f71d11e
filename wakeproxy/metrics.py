# -*- test-case-name: tests.test_metrics -*-
"""
Prometheus metrics through C{prometheus_client}: one L{CollectorRegistry} per process (never the library's
global default, so every test builds its own), holding the library's process metrics, the waker's counters
and histogram, and L{ReadGauge}s read at scrape time. L{exposition} encodes a registry for a scrape.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, Optional

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

__all__ = ["CollectorRegistry", "Counter", "Histogram", "ReadGauge", "WAKE_BUCKETS", "exposition",
           "process_registry"]

WAKE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def process_registry() -> CollectorRegistry:
    """The registry L{wakeproxy.tap.makeService} builds once: the process metrics (CPU, memory, fds), empty
    of wakeproxy's own until the waker registers them."""
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    return registry


class ReadGauge(Collector):
    """A gauge read at scrape time from C{read()}, which returns C{{label values: value}}."""

    def __init__(self, name: str, documentation: str, read: Callable[[], dict], labels: Iterable[str] = (),
                 registry: Optional[CollectorRegistry] = None):
        self._name = name
        self._documentation = documentation
        self._read = read
        self._labels = list(labels)
        if registry is not None:
            registry.register(self)

    def describe(self) -> list:
        return [GaugeMetricFamily(self._name, self._documentation, labels=self._labels)]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(self._name, self._documentation, labels=self._labels)
        for values, value in sorted(self._read().items()):
            family.add_metric(list(values), value)
        yield family


def exposition(registry: CollectorRegistry, accept: Optional[bytes]) -> tuple[bytes, bytes]:
    """
    C{(body, content type)} for a scrape whose C{Accept} header is C{accept}: Prometheus' text format, or
    OpenMetrics when the scraper asks for it (the library's own negotiation).
    """
    encode, content_type = choose_encoder(accept.decode("latin-1") if accept else "")
    return encode(registry), content_type.encode("ascii")
