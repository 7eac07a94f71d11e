# -*- test-case-name: tests.test_labels -*-
"""
Tests for L{wakeproxy.waking.labels}: where an instance's app listens, which URL probes it and which Traefik
router serves it, read from its labels (table-driven; each case is named in its assertion message).
"""

from twisted.trial.unittest import SynchronousTestCase

from wakeproxy.waking.labels import (
    DEPENDS_ON,
    GROUP,
    HEALTH_CHECK,
    NETWORK,
    OWNER,
    PORT,
    ROUTER,
    SEED_HEALTH_CHECK,
    AddressError,
    depends_on,
    direct_address,
    group,
    health_check_ignored,
    health_check_problem,
    health_check_url,
    owner_of,
    port_allowed,
    router_labels,
    router_rule,
    router_name,
    same_owner,
    traefik_label_problem,
)
from wakeproxy.runtime.interface import Container


def container(labels=(), network_mode="host", networks=(), name="app"):
    return Container(id="a" * 64, name=name, image="mock-app:latest", state="running", labels=dict(labels),
                     network_mode=network_mode, networks=dict(networks))


class LabelNamesTests(SynchronousTestCase):
    """The label names are part of wakeproxy's interface."""

    def test_names(self):
        self.assertEqual((PORT, NETWORK, HEALTH_CHECK, SEED_HEALTH_CHECK, ROUTER, OWNER), (
            "wakeproxy.port", "wakeproxy.network", "wakeproxy.health-check", "health-check", "wakeproxy.router",
            "wakeproxy.owner"))


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

    def test_address_error_is_value_error(self):
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

    def test_tenants_get_paths_on_their_own_address_only(self):
        """Issue 11, finding 4: a tenant's URL is never requested; its path is, on its own address."""
        address = ("10.0.0.2", 8080)
        cases = [
            ("URL ignored", {HEALTH_CHECK: "http://127.0.0.1:8008/login"}, None, True),
            ("https URL ignored", {HEALTH_CHECK: "https://app.internal/ready"}, None, True),
            ("seed label URL ignored", {SEED_HEALTH_CHECK: "http://x:1/up"}, None, True),
            ("authority ignored", {HEALTH_CHECK: "//127.0.0.1:8008/login"}, None, True),
            ("backslash ignored", {HEALTH_CHECK: "/\\127.0.0.1:8008/login"}, None, True),
            ("relative path ignored", {HEALTH_CHECK: "healthz"}, None, True),
            ("path joined", {HEALTH_CHECK: "/healthz"}, "http://10.0.0.2:8080/healthz", False),
            ("query kept", {HEALTH_CHECK: "/h?next=http://x/"}, "http://10.0.0.2:8080/h?next=http://x/", False),
            ("no label", {}, None, False),
        ]
        for case, labels, expected, ignored in cases:
            tenant = container(dict(labels, **{OWNER: "alice"}))
            self.assertEqual(health_check_url(tenant, address), expected, case)
            why = health_check_ignored(tenant)
            self.assertEqual(why is not None, ignored, case)
            # the operator's own containers: never ignored
            self.assertIsNone(health_check_ignored(container(labels)), case)

    def test_path_problems(self):
        for value in ("/", "/healthz", "/a/b?c=d&e=%20", "/@x", "/h#f"):
            self.assertIsNone(health_check_problem(value), value)
        for value in ("", "h", "http://x/", "HTTP://x/", "//x/", "///x", "/a b", "/a\tb", "/\u00e9", "/a\\b",
                      "/a\x7f"):
            self.assertIsNotNone(health_check_problem(value), value)


class OwnerTests(SynchronousTestCase):
    """Owners, and what a tenant's group and dependencies may reach (issue 11, finding 5)."""

    def test_owner(self):
        self.assertIsNone(owner_of(container({})))
        self.assertEqual(owner_of(container({OWNER: "alice"})), "alice")
        cases = [({}, {}, True), ({OWNER: "a"}, {OWNER: "a"}, True), ({OWNER: "a"}, {OWNER: "b"}, False),
                 ({OWNER: "a"}, {}, False), ({}, {OWNER: "a"}, False), ({OWNER: ""}, {}, False)]
        for a, b, expected in cases:
            self.assertEqual(same_owner(container(a), container(b)), expected, (a, b))

    def test_groups_are_per_owner(self):
        keys = {
            "operator g": group(container({GROUP: "g"})),
            "alice g": group(container({GROUP: "g", OWNER: "alice"})),
            "bob g": group(container({GROUP: "g", OWNER: "bob"})),
            "alice's group named like bob's key": group(container({GROUP: "g@owner:bob", OWNER: "alice"})),
            "owner with @ and :": group(container({GROUP: "g", OWNER: "bob@owner:alice"})),
            "alice h": group(container({GROUP: "h", OWNER: "alice"})),
        }
        self.assertEqual(len(set(keys.values())), len(keys), keys)
        self.assertEqual(keys["operator g"], "g")
        self.assertEqual(group(container({GROUP: "g", OWNER: "alice"}, name="other")), keys["alice g"])
        self.assertIsNone(group(container({OWNER: "alice"})))
        self.assertIsNone(group(container({GROUP: "", OWNER: "alice"})))

    def test_dependencies_of_the_same_owner_only(self):
        others = {
            "db": container({OWNER: "alice"}, name="db"),
            "cache": container({OWNER: "bob"}, name="cache"),
            "infra": container({}, name="infra"),
        }
        lookup = others.get
        labels = {DEPENDS_ON: "db, cache,infra,missing"}
        self.assertEqual(depends_on(container(labels)), ["db", "cache", "infra", "missing"], "operator: trusted")
        self.assertEqual(depends_on(container(labels), lookup), ["db", "cache", "infra", "missing"])
        alice = container(dict(labels, **{OWNER: "alice"}))
        self.assertEqual(depends_on(alice, lookup), ["db"])
        self.assertEqual(depends_on(alice), [], "without a lookup nothing can be checked: nothing is woken")
        bob = container(dict(labels, **{OWNER: "bob"}))
        self.assertEqual(depends_on(bob, lookup), ["cache"])


class PortAllowedTests(SynchronousTestCase):
    """Tests for L{port_allowed}: issue 11, finding 3, at forwarding time."""

    def test_table(self):
        own = {8000, 8008}
        ranges = [(1024, 65535)]
        cases = [
            ("operator: anything", {PORT: "8008"}, "host", ranges, None),
            ("operator: low port", {PORT: "22"}, "host", ranges, None),
            ("tenant: a free port", {PORT: "9000", OWNER: "a"}, "host", ranges, None),
            ("tenant: the API's port", {PORT: "8008", OWNER: "a"}, "host", ranges, "wakeproxy's own"),
            ("tenant: the proxy's port", {PORT: "8000", OWNER: "a"}, "host", ranges, "wakeproxy's own"),
            ("tenant: own port on its own network", {PORT: "8008", OWNER: "a"}, "appnet", ranges, None),
            ("tenant: below the range", {PORT: "22", OWNER: "a"}, "host", ranges, "outside"),
            ("tenant: below the range, any network", {PORT: "80", OWNER: "a"}, "appnet", ranges, "outside"),
            ("tenant: narrower ranges", {PORT: "9101", OWNER: "a"}, "host", [(9000, 9100)], "9000-9100"),
            ("tenant: one of several ranges", {PORT: "80", OWNER: "a"}, "host", [(80, 80), (9000, 9100)], None),
            ("tenant: no port label", {OWNER: "a"}, "host", ranges, None),
            ("tenant: bad port label", {PORT: "x", OWNER: "a"}, "host", ranges, None),
        ]
        for case, labels, mode, allow, words in cases:
            why = port_allowed(container(labels, mode, {} if mode == "host" else {mode: "10.0.0.2"}, name="m1"),
                               allow, own)
            if words is None:
                self.assertIsNone(why, case)
            else:
                self.assertIn(words, why, case)
                self.assertIn("m1", why, case)

    def test_defaults(self):
        self.assertIsNone(port_allowed(container({PORT: "8008", OWNER: "a"})))
        self.assertIn("outside", port_allowed(container({PORT: "443", OWNER: "a"})))


class TraefikLabelTests(SynchronousTestCase):
    """Tests for L{traefik_label_problem} (issue 11, finding 6) and the labels wakeproxy writes itself."""

    def test_accepted(self):
        for key, value in [
            ("traefik.enable", "true"), ("traefik.docker.network", "traefiknet"), ("TRAEFIK.ENABLE", "true"),
            ("traefik.http.routers.m1.entrypoints", "web"), ("traefik.http.routers.m1-api.tls", "true"),
            ("traefik.http.routers.m1.service", "m1-web@docker"), ("traefik.http.routers.m1.middlewares", "m1-strip"),
            ("traefik.http.services.m1.loadbalancer.server.port", "9000"),
            ("traefik.http.services.m1.loadbalancer.serverstransport", "m1-insecure"),
            ("traefik.http.services.m1.loadbalancer.healthcheck.path", "/up"),
            ("traefik.http.middlewares.m1-strip.stripprefix.prefixes", "/m1"),
            ("traefik.http.serversTransports.m1-insecure.insecureSkipVerify", "true"),
            ("traefik.tcp.services.m1-db.loadbalancer.server.port", "5432"),
            ("traefik.udp.services.m1-dns.loadbalancer.server.port", "53"),
        ]:
            self.assertIsNone(traefik_label_problem(key, value, "m1"), key)

    def test_refused(self):
        cases = [
            ("traefik..http.routers.m1.rule", "PathPrefix(`/`)", "empty segment"),
            ("traefik.http.routers.m1.", "x", "empty segment"),
            ("traefik.http.routers.m1.rule", "PathPrefix(`/`)", "--allow-router-rules"),
            ("traefik.http.routers.m1.Rule", "PathPrefix(`/`)", "--allow-router-rules"),
            ("traefik.http.routers.m1.priority", "2147483647", "--allow-router-rules"),
            ("traefik.tcp.routers.m1.rule", "HostSNI(`*`)", "--allow-router-rules"),
            ("traefik.http.routers.m2.entrypoints", "web", "may not claim"),
            ("traefik.http.routers.m1.service", "api@internal", "own services"),
            ("traefik.http.routerſ.m2.rule", "x", "may not claim"),  # ſ folds to s, as in Go's EqualFold
            ("traefik.http.rooters.m1.rule", "x", "no Traefik section"),
            ("traefik.grpc.routers.m1.rule", "x", "not a Traefik label"),
            ("traefik.tls.stores.default.defaultcertificate.certfile", "/x", "not a Traefik label"),
            ("traefik.http.routers.m1", "x", "of the form"),
            ("traefik.http.services.m1.loadbalancer.server.url", "http://127.0.0.1:8008", "servers"),
            ("traefik.http.services.m1.loadbalancer.servers[0].url", "http://127.0.0.1:8008", "servers"),
            ("traefik.http.services.m1.weighted.services[0].name", "api@internal", "load-balancer"),
            ("traefik.http.middlewares.m1.forwardauth.address", "http://127.0.0.1:8008/", "call other"),
            ("traefik.http.middlewares.m1.ForwardAuth.address", "http://127.0.0.1:8008/", "call other"),
        ]
        for key, value, words in cases:
            why = traefik_label_problem(key, value, "m1")
            self.assertIsNotNone(why, key)
            self.assertIn(words, why, key)

    def test_rules_with_allow_router_rules(self):
        self.assertIsNone(traefik_label_problem("traefik.http.routers.m1.rule", "Host(`m1`)", "m1", True))
        self.assertIsNone(traefik_label_problem("traefik.http.routers.m1.priority", "10", "m1", True))
        # ...but only on its own routers, and never with an empty segment
        self.assertIsNotNone(traefik_label_problem("traefik.http.routers.m2.rule", "Host(`m1`)", "m1", True))
        self.assertIsNotNone(traefik_label_problem("traefik..http.routers.m1.rule", "Host(`m1`)", "m1", True))

    def test_router_rules_written_by_wakeproxy(self):
        self.assertEqual(router_rule("cookie:instance", "minion-1"),
                         "HeadersRegexp(`Cookie`, `(^|;\\s*)instance=minion-1(;|$)`)")  # as docker-compose.yml shows
        self.assertEqual(router_rule("cookie:instance", "m.1"), "HeadersRegexp(`Cookie`, `(^|;\\s*)instance=m\\.1(;|$)`)")
        self.assertEqual(router_rule("header:X-Instance", "m1"), "Header(`X-Instance`, `m1`)")
        self.assertEqual(router_rule("host:{name}.apps.example", "m1"), "Host(`m1.apps.example`)")
        self.assertEqual(router_rule("path:u", "m1", keep_path=True), "Path(`/u/m1`) || PathPrefix(`/u/m1/`)")
        for select in ("path:u", "cookie:a`b", "nope:x"):
            with self.assertRaises(ValueError):
                router_rule(select, "m1")
        self.assertEqual(router_labels("m1", "cookie:instance", port="9000"), {
            "traefik.enable": "true",
            "traefik.http.routers.m1.rule": "HeadersRegexp(`Cookie`, `(^|;\\s*)instance=m1(;|$)`)",
            "traefik.http.routers.m1.service": "m1",
            "traefik.http.services.m1.loadbalancer.server.port": "9000",
        })


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
