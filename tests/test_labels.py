# -*- test-case-name: tests.test_labels -*-
"""
Tests for L{wakeproxy.labels}: where an instance's app listens, which URL probes it and which Traefik
router serves it, read from its labels (table-driven; each case is named in its assertion message).
"""

from twisted.trial.unittest import SynchronousTestCase

from wakeproxy.labels import (
    HEALTH_CHECK,
    NETWORK,
    PORT,
    ROUTER,
    SEED_HEALTH_CHECK,
    AddressError,
    direct_address,
    health_check_url,
    router_name,
)
from wakeproxy.runtime import Container


def container(labels=(), network_mode="host", networks=(), name="app"):
    return Container(id="a" * 64, name=name, image="mock-app:latest", state="running", labels=dict(labels),
                     network_mode=network_mode, networks=dict(networks))


class LabelNamesTests(SynchronousTestCase):
    """The label names are part of wakeproxy's interface."""

    def test_names(self):
        self.assertEqual((PORT, NETWORK, HEALTH_CHECK, SEED_HEALTH_CHECK, ROUTER), (
            "wakeproxy.port", "wakeproxy.network", "wakeproxy.health-check", "health-check", "wakeproxy.router"))


class DirectAddressTests(SynchronousTestCase):
    """Tests for L{direct_address}."""

    def test_valid(self):
        cases = [
            ("host network", {PORT: "8080"}, "host", {}, ("127.0.0.1", 8080)),
            ("host network, lowest port", {PORT: "1"}, "host", {}, ("127.0.0.1", 1)),
            ("host network, highest port", {PORT: "65535"}, "host", {}, ("127.0.0.1", 65535)),
            ("host network ignores the network label", {PORT: "80", NETWORK: "back"}, "host", {},
             ("127.0.0.1", 80)),
            ("bridge, one network", {PORT: "8080"}, "bridge", {"bridge": "172.17.0.2"}, ("172.17.0.2", 8080)),
            ("user network, one network", {PORT: "3000"}, "appnet", {"appnet": "10.1.0.5"}, ("10.1.0.5", 3000)),
            ("one network with an IP, one without", {PORT: "80"}, "front", {"front": "", "back": "10.0.0.7"},
             ("10.0.0.7", 80)),
            ("several networks, one named", {PORT: "8080", NETWORK: "back"}, "front",
             {"front": "10.0.0.2", "back": "10.0.1.2"}, ("10.0.1.2", 8080)),
            ("one network, named", {PORT: "8080", NETWORK: "front"}, "front", {"front": "10.0.0.2"},
             ("10.0.0.2", 8080)),
        ]
        for case, labels, mode, networks, expected in cases:
            self.assertEqual(direct_address(container(labels, mode, networks)), expected, case)

    def test_invalid(self):
        """Each error names the instance and what is missing or wrong."""
        cases = [
            ("no port label", {}, "host", {}, [PORT, "no "]),
            ("no port label, bridge", {}, "bridge", {"bridge": "172.17.0.2"}, [PORT]),
            ("port not a number", {PORT: "http"}, "host", {}, [PORT, "'http'", "invalid"]),
            ("empty port", {PORT: ""}, "host", {}, [PORT, "invalid"]),
            ("port zero", {PORT: "0"}, "host", {}, [PORT, "'0'"]),
            ("port too large", {PORT: "65536"}, "host", {}, [PORT, "'65536'"]),
            ("negative port", {PORT: "-80"}, "host", {}, [PORT, "'-80'"]),
            ("fractional port", {PORT: "80.5"}, "host", {}, [PORT, "'80.5'"]),
            ("several networks, none named", {PORT: "80"}, "front", {"front": "10.0.0.2", "back": "10.0.1.2"},
             [NETWORK, "2 networks"]),
            ("no network at all", {PORT: "80"}, "none", {}, [NETWORK, "0 networks"]),
            ("only networks without an IP", {PORT: "80"}, "front", {"front": ""}, [NETWORK, "0 networks"]),
            ("named network missing", {PORT: "80", NETWORK: "back"}, "front", {"front": "10.0.0.2"},
             [NETWORK, "'back'"]),
            ("named network without an IP", {PORT: "80", NETWORK: "back"}, "front",
             {"front": "10.0.0.2", "back": ""}, [NETWORK, "'back'"]),
        ]
        for case, labels, mode, networks, words in cases:
            with self.assertRaises(AddressError, msg=case) as raised:
                direct_address(container(labels, mode, networks, name="minion-7"))
            message = str(raised.exception)
            for word in words + ["minion-7"]:
                self.assertIn(word, message, "{}: {}".format(case, message))

    def test_addressErrorIsValueError(self):
        self.assertTrue(issubclass(AddressError, ValueError))


class HealthCheckUrlTests(SynchronousTestCase):
    """Tests for L{health_check_url}."""

    def test_table(self):
        address = ("10.0.0.2", 8080)
        cases = [
            ("full URL as is", {HEALTH_CHECK: "http://app.internal:9000/ready"}, address,
             "http://app.internal:9000/ready"),
            ("full URL without an address", {HEALTH_CHECK: "http://app.internal:9000/ready"}, None,
             "http://app.internal:9000/ready"),
            ("https URL as is", {HEALTH_CHECK: "https://app.internal/ready?deep=1"}, address,
             "https://app.internal/ready?deep=1"),
            ("path joined to the address", {HEALTH_CHECK: "/healthz"}, address, "http://10.0.0.2:8080/healthz"),
            ("path with a query", {HEALTH_CHECK: "/health?full=1"}, ("127.0.0.1", 80),
             "http://127.0.0.1:80/health?full=1"),
            ("root path", {HEALTH_CHECK: "/"}, address, "http://10.0.0.2:8080/"),
            ("path without an address", {HEALTH_CHECK: "/healthz"}, None, None),
            ("relative path", {HEALTH_CHECK: "healthz"}, address, None),
            ("seed label, path", {SEED_HEALTH_CHECK: "/up"}, address, "http://10.0.0.2:8080/up"),
            ("seed label, URL", {SEED_HEALTH_CHECK: "http://x:1/up"}, None, "http://x:1/up"),
            ("wakeproxy label wins over the seed's", {HEALTH_CHECK: "/a", SEED_HEALTH_CHECK: "/b"}, address,
             "http://10.0.0.2:8080/a"),
            ("empty wakeproxy label falls back to the seed's", {HEALTH_CHECK: "", SEED_HEALTH_CHECK: "/b"},
             address, "http://10.0.0.2:8080/b"),
            ("neither label", {}, address, None),
            ("neither label, no address", {}, None, None),
            ("unrelated labels", {PORT: "8080", "traefik.enable": "true"}, address, None),
        ]
        for case, labels, addr, expected in cases:
            self.assertEqual(health_check_url(container(labels), addr), expected, case)


class RouterNameTests(SynchronousTestCase):
    """Tests for L{router_name}."""

    def test_table(self):
        cases = [
            ("the label", {ROUTER: "web-app"}, "minion-1", "web-app"),
            ("no label: the instance's name", {}, "minion-1", "minion-1"),
            ("empty label: the instance's name", {ROUTER: ""}, "minion-1", "minion-1"),
            ("other labels ignored", {"traefik.http.routers.x.rule": "Host(`x`)"}, "minion-2", "minion-2"),
        ]
        for case, labels, name, expected in cases:
            self.assertEqual(router_name(container(labels, name=name)), expected, case)
