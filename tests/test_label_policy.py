# -*- test-case-name: tests.test_label_policy -*-
"""
Regression tests for issue 11's findings 3 to 6: what a tenant's labels may say when the deploy API
creates an instance (L{CreatePolicy.check} with an owner and a lookup), and that what slipped through
before (or was made by hand with an owner label) cannot reach another owner's instances at wake or sleep
time, nor wakeproxy's own ports.
"""

from dataclasses import replace

from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from wakeproxy.api.deployspec import CreatePolicy, check_deploy
from wakeproxy.api.jsonbody import BodyError
from wakeproxy.waking.idle import IdleStopper
from wakeproxy.waking.labels import DEPENDS_ON, GROUP, HEALTH_CHECK, IDLE_TIMEOUT, OWNER, PORT, port_allowed, reach
from wakeproxy.runtime.memory import MemoryRuntime
from wakeproxy.runtime.interface import OwnerLabel
from wakeproxy.listeners import listening_ports
from wakeproxy.tap import Options
from wakeproxy.waking.waker import Waker

#: the policy of the README's host-network example (--allow-image 'mock-app:*' --allow-host-network), as
#: makeService builds it: wakeproxy listens on 8000 (proxy) and 8008 (API).
POLICY = CreatePolicy(owner=OwnerLabel(), allowed_images=("mock-app:*",), allow_host_network=True,
                      forbidden_ports=frozenset({8000, 8008}))


def settings(*argv):
    options = Options()
    options.parseOptions(list(argv))
    return options.settings


def body(name="m1", network="host", **labels):
    return {"name": name, "image": "mock-app:latest", "network": network, "labels": labels}


class PolicyTestsMixin:
    def refused(self, doc, policy=None, owner="alice", lookup=None):
        """The fields a refused body's errors name (and check that it was refused with 422)."""
        policy = policy or POLICY
        with self.assertRaises(BodyError) as e:
            policy.check(doc, owner=owner, lookup=lookup)
        self.assertEqual(e.exception.status, 422)
        return {x.field: x.detail for x in e.exception.errors}


class OptionsTests(SynchronousTestCase):
    def test_wakeproxys_own_ports_from_its_endpoints(self):
        cases = [
            (["tcp:8000"], {8000}), (["tcp:port=8008:interface=127.0.0.1"], {8008}), (["tcp6:9000"], {9000}),
            (["ssl:443:privateKey=/k\\:x.pem:certKey=/c.pem"], {443}), (["ssl:port=8443"], {8443}),
            (["unix:/run/wakeproxy.sock"], set()), (["tcp:0"], set()), (["systemd:domain=INET:index=0"], set()),
            (["tcp:8000", "tcp:8001:interface=::1", "tcp:8008:interface=127.0.0.1"], {8000, 8001, 8008}),
            ([""], set()), (["tcp:"], set()), (["tcp:x"], set()),
        ]
        for descriptions, expected in cases:
            self.assertEqual(listening_ports(descriptions), expected, descriptions)

    def test_settings(self):
        defaults = settings("--allow-host-network")
        self.assertEqual(defaults.own_ports, {8000, 8008})
        self.assertEqual(list(defaults.allow_ports), [(1024, 65535)])
        self.assertEqual((defaults.api.allow_router_rules, defaults.api.router_labels), (False, False))
        given = settings("--allow-port", "9000-9100", "--allow-port", "80", "--allow-router-rules", "--router-labels",
                         "--select", "header:X-Instance", "--listen", "tcp:7000", "--listen", "unix:/x.sock",
                         "--api-listen", "tcp:port=7008")
        self.assertEqual(list(given.allow_ports), [(9000, 9100), (80, 80)])
        self.assertEqual((given.api.allow_router_rules, given.api.router_labels, given.proxy.select),
                         (True, True, "header:X-Instance"))
        self.assertEqual(given.own_ports, {7000, 7008})


class OwnerLabelTests(PolicyTestsMixin, SynchronousTestCase):
    def test_the_owner_label_is_reserved_and_written_by_wakeproxy(self):
        for key in (OWNER, "Wakeproxy.Owner", OWNER + ".x", "wakeproxy.creating"):
            errors = self.refused(body(**{key: "bob", PORT: "9000"}))
            self.assertEqual(list(errors), ["labels." + key])
        spec = POLICY.check(body(**{PORT: "9000"}), owner="alice")
        self.assertEqual(spec.labels[OWNER], "alice")
        self.assertNotIn(OWNER, check_deploy(body(**{PORT: "9000"}), POLICY).labels)


class PortTests(PolicyTestsMixin, SynchronousTestCase):
    """Finding 3: an instance whose port is the deploy API's, reached through the public proxy listener."""

    def test_wakeproxys_own_ports_are_refused_with_host_networking(self):
        for port in ("8008", "8000"):
            errors = self.refused(body(**{PORT: port}))
            self.assertIn("wakeproxy's own listening ports", errors["labels.wakeproxy.port"])
        # on its own network the port is the container's own
        spec = POLICY.check(body(network="appnet", **{PORT: "8008"}), owner="alice")
        self.assertEqual(spec.labels[PORT], "8008")

    def test_allowed_ranges(self):
        self.assertIn("outside", self.refused(body(**{PORT: "22"}))["labels.wakeproxy.port"])
        self.assertIn("outside", self.refused(body(network="appnet", **{PORT: "80"}))["labels.wakeproxy.port"])
        policy = replace(POLICY, allow_ports=((9000, 9100),))
        errors = self.refused(body(**{PORT: "9101"}), policy)
        self.assertIn("9000-9100", errors["labels.wakeproxy.port"])
        self.assertEqual(policy.check(body(**{PORT: "9100"}), owner="alice").labels[PORT], "9100")

    def test_and_again_at_forwarding_time(self):
        """A container made before the fix (or by hand with an owner label) is refused by port_allowed."""
        runtime = MemoryRuntime()
        api_port = runtime.add_managed("old", {OWNER: "alice", PORT: "8008"}, network_mode="host")
        policy = POLICY
        self.assertIn("own listening", port_allowed(api_port, policy.allow_ports, policy.forbidden_ports))
        operator = runtime.add_managed("ops", {PORT: "8008"}, network_mode="host")
        self.assertIsNone(port_allowed(operator, policy.allow_ports, policy.forbidden_ports))


class HealthCheckTests(PolicyTestsMixin, SynchronousTestCase):
    """Finding 4: any URL in the health check made wakeproxy a blind SSRF oracle."""

    def test_urls_are_refused(self):
        for key in (HEALTH_CHECK, "health-check"):
            for value in ("http://127.0.0.1:8008/login", "https://10.0.0.1/", "//127.0.0.1:8008/x", "x/y"):
                errors = self.refused(body(**{PORT: "9000", key: value}))
                self.assertIn("labels." + key, errors, value)
        spec = POLICY.check(body(**{PORT: "9000", HEALTH_CHECK: "/status"}), owner="a")
        self.assertEqual(spec.labels[HEALTH_CHECK], "/status")


class DependencyTests(PolicyTestsMixin, SynchronousTestCase):
    """Finding 5 at create: depends-on may only name the owner's own instances."""

    def setUp(self):
        self.runtime = MemoryRuntime()
        self.runtime.add_managed("alice-db", {OWNER: "alice"})
        self.runtime.add_managed("bob-db", {OWNER: "bob"})
        self.runtime.add_managed("infra", {})

    def test_other_owners_and_missing_instances_are_refused_alike(self):
        details = {}
        for target in ("bob-db", "infra", "nobody-here"):
            errors = self.refused(body(**{PORT: "9000", DEPENDS_ON: target}), lookup=self.runtime.get)
            details[target] = errors["labels.wakeproxy.depends-on"]
        self.assertEqual(len({d.replace(repr(t).replace("'", '"'), "") for t, d in details.items()}), 1, details)

    def test_own_instances_are_accepted(self):
        policy = POLICY
        spec = policy.check(body(**{PORT: "9000", DEPENDS_ON: "alice-db", GROUP: "g"}), owner="alice",
                            lookup=self.runtime.get)
        self.assertEqual((spec.labels[DEPENDS_ON], spec.labels[GROUP]), ("alice-db", "g"))

    def test_without_a_lookup_no_dependency_is_accepted(self):
        self.assertIn("labels.wakeproxy.depends-on", self.refused(body(**{PORT: "9000", DEPENDS_ON: "alice-db"})))

    def test_malformed(self):
        for value in ("m1", "alice-db,", "a b"):
            self.assertIn("labels.wakeproxy.depends-on",
                          self.refused(body(**{PORT: "9000", DEPENDS_ON: value}), lookup=self.runtime.get), value)


class _ReadyPlan:
    """A readiness plan whose probe succeeds at once."""

    ready_delay = 0.0

    def docker_health_required(self, container):
        return False

    def probe(self, container):
        return succeed(1)

    def reach(self, container):
        return reach(container)

    def route(self, container):
        return None


class WakeAndSleepTests(SynchronousTestCase):
    """
    Finding 5 at wake and sleep time: containers labelled before the fix (or by hand) with another owner's
    group or dependencies: waking mine must not start theirs, nor their idle-timeout=never keep mine up.
    """

    def setUp(self):
        self.clock = Clock()
        self.runtime = MemoryRuntime()
        self.waker = Waker(self.clock, self.runtime, _ReadyPlan(), wake_timeout=10)
        self.addCleanup(self.waker.stop)

    def managed(self, name, **labels):
        self.runtime.add_managed(name, labels)

    def test_groups_are_per_owner(self):
        self.managed("alice-app", **{OWNER: "alice", GROUP: "g"})
        self.managed("alice-db", **{OWNER: "alice", GROUP: "g"})
        self.managed("bob-app", **{OWNER: "bob", GROUP: "g"})
        self.managed("ops", **{GROUP: "g"})
        self.successResultOf(self.waker.wait_ready("alice-app"))
        states = {c.name: c.state for c in self.runtime.list()}
        self.assertEqual(states, {"alice-app": "running", "alice-db": "running", "bob-app": "exited",
                                  "ops": "exited"})

    def test_dependencies_of_another_owner_are_not_woken(self):
        self.managed("bob-db", **{OWNER: "bob"})
        self.managed("infra")
        self.managed("alice-app", **{OWNER: "alice", DEPENDS_ON: "bob-db,infra"})
        self.successResultOf(self.waker.wait_ready("alice-app"))
        self.assertEqual(self.runtime.get("alice-app").state, "running")
        self.assertEqual((self.runtime.get("bob-db").state, self.runtime.get("infra").state), ("exited", "exited"))

    def test_another_owners_never_does_not_keep_mine_awake(self):
        self.managed("bob-keeper", **{OWNER: "bob", GROUP: "g", IDLE_TIMEOUT: "never"})
        self.managed("alice-app", **{OWNER: "alice", GROUP: "g", IDLE_TIMEOUT: "5s"})
        self.successResultOf(self.waker.wait_ready("alice-app"))
        self.successResultOf(self.waker.wait_ready("bob-keeper"))
        stopper = IdleStopper(self.clock, self.runtime, self.waker, default_timeout=None)
        self.clock.advance(6)
        stopper.sweep()
        self.assertEqual(self.runtime.get("alice-app").state, "exited")
        self.assertEqual(self.runtime.get("bob-keeper").state, "running")


class RouterLabelsTests(PolicyTestsMixin, SynchronousTestCase):
    """Finding 6, with --router-labels: wakeproxy writes the anchored rule; tenants cannot write their own."""

    def test_written_by_wakeproxy(self):
        policy = replace(POLICY, router_labels=True)
        spec = policy.check(body("minion-1", network="traefiknet", **{PORT: "9000"}), owner="alice")
        self.assertEqual(dict(spec.labels), {
            PORT: "9000", OWNER: "alice", "traefik.enable": "true",
            "traefik.http.routers.minion-1.rule": "HeadersRegexp(`Cookie`, `(^|;\\s*)instance=minion-1(;|$)`)",
            "traefik.http.routers.minion-1.service": "minion-1",
            "traefik.http.services.minion-1.loadbalancer.server.port": "9000",
        })
        errors = self.refused(body("minion-1", network="traefiknet", **{
            "traefik.http.routers.minion-1.rule": "PathPrefix(`/`)"}), policy)
        self.assertIn("writes the instance's rule itself", errors["labels.traefik.http.routers.minion-1.rule"])

    def test_a_selector_traefik_cannot_follow(self):
        policy = replace(POLICY, router_labels=True, select="path:u")
        self.assertIn("labels", self.refused(body(**{PORT: "9000"}), policy))


class SameOwnerDependencyTests(WakeAndSleepTests):
    """A tenant's dependencies on their own instances still work: woken first, stopped last."""

    def test_dependencies_of_the_same_owner_are_woken_first(self):
        self.managed("alice-db", **{OWNER: "alice"})
        self.managed("alice-app", **{OWNER: "alice", DEPENDS_ON: "alice-db"})
        self.successResultOf(self.waker.wait_ready("alice-app"))
        self.assertEqual(self.runtime.get("alice-db").state, "running")

    def test_a_running_dependency_of_the_same_owner_sleeps_after_its_dependent(self):
        self.managed("alice-db", **{OWNER: "alice", IDLE_TIMEOUT: "5s"})
        self.managed("alice-app", **{OWNER: "alice", DEPENDS_ON: "alice-db", IDLE_TIMEOUT: "1h"})
        self.successResultOf(self.waker.wait_ready("alice-app"))
        stopper = IdleStopper(self.clock, self.runtime, self.waker, default_timeout=None)
        self.clock.advance(6)
        stopper.sweep()
        self.assertEqual(self.runtime.get("alice-db").state, "running")
