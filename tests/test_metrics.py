# -*- test-case-name: tests.test_metrics -*-
"""
Tests for L{wakeproxy.metrics} and the waker's metrics: names, labels and values as a scraper reads them
(parsed back with C{prometheus_client}'s own parser), each test with its own registry.
"""

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.test_waker import FakePlan
from wakeproxy.metrics import CollectorRegistry, ReadGauge, exposition, process_registry
from wakeproxy.runtime.memory import MemoryRuntime
from wakeproxy.waking.waker import Waker


def samples(registry, accept=None) -> dict:
    """C{{(sample name, sorted label items): value}} of one scrape of C{registry}."""
    body, _ = exposition(registry, accept)
    found = {}
    for family in text_string_to_metric_families(body.decode("utf-8")):
        for sample in family.samples:
            found[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return found


class ExpositionTests(SynchronousTestCase):
    def test_text_format_by_default(self):
        body, content_type = exposition(CollectorRegistry(), None)
        self.assertTrue(content_type.startswith(b"text/plain; version=0.0.4"), content_type)
        self.assertEqual(body, b"")

    def test_openmetrics_when_asked(self):
        body, content_type = exposition(CollectorRegistry(), b"application/openmetrics-text; version=1.0.0")
        self.assertTrue(content_type.startswith(b"application/openmetrics-text"), content_type)
        self.assertTrue(body.endswith(b"# EOF\n"), body)

    def test_process_metrics(self):
        found = {name for name, _ in samples(process_registry())}
        self.assertIn("process_cpu_seconds_total", found)
        self.assertIn("process_resident_memory_bytes", found)

    def test_registries_are_separate(self):
        one, two = CollectorRegistry(), CollectorRegistry()
        ReadGauge("wakeproxy_test_gauge", "A test gauge.", lambda: {(): 1}, registry=one)
        self.assertIn(("wakeproxy_test_gauge", ()), samples(one))
        self.assertEqual(samples(two), {})

    def test_read_gauge_reads_at_scrape_time(self):
        registry = CollectorRegistry()
        values = {}
        ReadGauge("wakeproxy_test_gauge", "A test gauge.", lambda: values, ["instance"], registry=registry)
        self.assertEqual(samples(registry), {})
        values[("a",)] = 2
        values[('q"u\\o\nte',)] = 3
        self.assertEqual(samples(registry), {("wakeproxy_test_gauge", (("instance", "a"),)): 2,
                                             ("wakeproxy_test_gauge", (("instance", 'q"u\\o\nte'),)): 3})


class WakerMetricsTests(SynchronousTestCase):
    """The waker's metrics: C{wakeproxy_wakes_total{outcome}}, C{wakeproxy_wake_phase_seconds{phase}},
    C{wakeproxy_idle_stops_total{method}}, C{wakeproxy_held_requests}, C{wakeproxy_inflight_requests{instance}}."""

    def setUp(self):
        self.clock = Clock()
        self.runtime = MemoryRuntime()
        self.plan = FakePlan(self.clock)
        self.addCleanup(self.plan.consume)
        self.registry = CollectorRegistry()
        self.waker = Waker(self.clock, self.runtime, self.plan, wake_timeout=10.0, metrics=self.registry)
        self.addCleanup(self.waker.stop)
        self.runtime.add_managed("app")

    def test_idle_registry(self):
        found = samples(self.registry)
        self.assertEqual(found[("wakeproxy_held_requests", ())], 0)
        self.assertNotIn("wakeproxy_inflight_requests", {name for name, _ in found})

    def test_a_wake_held_requests_and_inflight(self):
        first = self.waker.wait_ready("app")
        self.waker.wait_ready("app")
        self.assertEqual(samples(self.registry)[("wakeproxy_held_requests", ())], 2)
        self.clock.advance(0.3)
        self.plan.probes[-1].callback(True)
        self.successResultOf(first)
        self.waker.exchange_began("app")
        found = samples(self.registry)
        self.assertEqual(found[("wakeproxy_wakes_total", (("outcome", "woken"),))], 1)
        self.assertEqual(found[("wakeproxy_wake_phase_seconds_count", (("phase", "total"),))], 1)
        self.assertEqual(found[("wakeproxy_wake_phase_seconds_bucket", (("le", "0.25"), ("phase", "total")))], 0)
        self.assertEqual(found[("wakeproxy_wake_phase_seconds_bucket", (("le", "0.5"), ("phase", "total")))], 1)
        self.assertEqual(found[("wakeproxy_wake_phase_seconds_bucket", (("le", "+Inf"), ("phase", "total")))], 1)
        self.assertAlmostEqual(found[("wakeproxy_wake_phase_seconds_sum", (("phase", "total"),))], 0.3)
        self.assertEqual(found[("wakeproxy_held_requests", ())], 0)
        self.assertEqual(found[("wakeproxy_inflight_requests", (("instance", "app"),))], 1)
        self.waker.exchange_ended("app")
        self.assertNotIn(("wakeproxy_inflight_requests", (("instance", "app"),)), samples(self.registry))

    def test_idle_stops(self):
        self.waker.wait_ready("app")
        self.plan.probes[-1].callback(True)
        self.successResultOf(self.waker.sleep("app", "stop"))
        self.assertEqual(samples(self.registry)[("wakeproxy_idle_stops_total", (("method", "stop"),))], 1)
