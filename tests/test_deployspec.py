"""
The deploy body and the create policy, table-driven. C{BAD_BODIES} (200 and more bad inputs: bad JSON,
wrong types, huge bodies, odd names, label hijacks) is also sent to the live API by tests.test_api_unit
and tests.test_api_docker, which check that each is answered 4xx problem+json and leaves nothing behind.
"""

import json

from twisted.trial.unittest import SynchronousTestCase

from wakeproxy.api.deployspec import CreatePolicy, check_deploy
from wakeproxy.api.jsonbody import BodyError, check_login, parse_json
from wakeproxy.runtime.interface import CreateSpec, OwnerLabel

#: the policy the table is written for: that of a wakeproxy run with --allow-image 'mock-app:*' (no
#: --allow-host-network, default --name-pattern and --owner-label).
TABLE_POLICY = CreatePolicy(allowed_images=("mock-app:*",))
#: the largest body the API accepts in the tests that send the table (--max-api-body).
TABLE_MAX_BODY = 256 * 1024
TABLE_NAME = "wpt-bad-input"

_BASE = {"name": TABLE_NAME, "network": "none", "image": "mock-app:latest", "labels": {}, "envs": {}}

_WRONG_TYPES = [("number", 1), ("float", 1.5), ("true", True), ("false", False), ("array", ["x"]),
                ("object", {"a": "b"})]


def _body(**changes) -> bytes:
    doc = dict(_BASE)
    for key, value in changes.items():
        if value is _DROP:
            doc.pop(key, None)
        else:
            doc[key] = value
    return json.dumps(doc).encode("utf-8")


_DROP = object()


def _labels(labels) -> bytes:
    return _body(labels=labels)


def _envs(envs) -> bytes:
    return _body(envs=envs)


def _cases():
    """(id, body, status, field the errors must name or None)."""
    cases = []
    add = lambda id, body, status, field=None: cases.append((id, body, status, field))  # noqa: E731

    # malformed JSON: 400
    for i, raw in enumerate([
        b"", b" ", b"\n\t", b"{", b"}", b"[", b"]", b"{]", b'{"name"}', b'{"name":}', b'{"name": "a",}',
        b"{'name': 'a'}", b"{name: \"a\"}", b"nul", b"tru", b"NaN", b"Infinity", b"-Infinity", b'{"n": NaN}',
        b'{"n": Infinity}', b'{"name": "a"} {"name": "b"}', b'{"name": "a"}x', b'{"name": "\x01"}',
        b'{"name": "\\x41"}', b'{"name": "\\u12"}', b'{"a": 1} // comment', b"/* c */ {}", b"\xff\xfe{\x00}\x00",
        b'{"name": "\xe9"}', b"\xc3\x28", b"\x00", b"[" * 100000, b'{"a":' * 50000, b"1" * 5000,
        b"\xef\xbb\xbf{}", b"undefined", b"{\"name\": 'a'}", b'{"name": "a" "image": "b"}',
    ]):
        add("bad-json-{}".format(i), raw, 400)

    # not an object: 422
    for id, value in [("array", []), ("array-of-object", [_BASE]), ("string", "x"), ("number", 1), ("true", True),
                      ("null", None), ("empty-string", "")]:
        add("top-{}".format(id), json.dumps(value).encode(), 422, "")

    # missing, duplicate and unknown keys: 422
    add("empty-object", b"{}", 422, "name")
    add("missing-name", _body(name=_DROP), 422, "name")
    add("missing-image", _body(image=_DROP), 422, "image")
    add("only-labels", json.dumps({"labels": {}}).encode(), 422, "name")
    add("duplicate-name", b'{"name": "a", "name": "b", "image": "mock-app:latest"}', 422, "name")
    add("duplicate-label", b'{"name": "ab", "image": "mock-app:latest", "labels": {"x": "1", "x": "2"}}', 422, "x")
    for key in ["Name", "NAME", "Image", "IMAGE", "Network", "Labels", "LABELS", "Envs", "env", "environment",
                "privileged", "Privileged", "binds", "Binds", "volumes", "mounts", "cap_add", "CapAdd", "devices",
                "host_config", "HostConfig", "command", "entrypoint", "user", "ports", "pid_mode", "ipc_mode",
                "security_opt", "restart_policy", "", " name", "name "]:
        add("unknown-key-{!r}".format(key), _body(**{}).replace(b"{", b"{" + json.dumps(key).encode() + b": true, ", 1),
            422, key)

    # wrong types: 422
    for field in ("name", "image", "network"):
        for id, value in _WRONG_TYPES + [("null", None)]:
            add("{}-is-{}".format(field, id), _body(**{field: value}), 422, field)
    for field in ("labels", "envs"):
        for id, value in [("array", []), ("string", "a=b"), ("number", 1), ("true", True), ("null", None),
                          ("list-of-pairs", [["a", "b"]])]:
            add("{}-is-{}".format(field, id), _body(**{field: value}), 422, field)
        for id, value in _WRONG_TYPES + [("null", None)]:
            add("{}-value-is-{}".format(field, id), _body(**{field: {"A": value}}), 422, field + ".A")

    # odd names: 422
    for i, name in enumerate([
        "", " ", "-a", ".a", "_a", "a b", "a/b", "../etc", "..", ".", "a:b", "a@b", "a\nb", "a\n", "\na",
        "a\x00b", "Upper", "UPPER", "a_b", "a.b", "\u00e9t\u00e9", "\uff41", "\U0001F600", "a" * 64, "a" * 129,
        "a" * 10000, "-", "a", "7", "a--b!", "a;rm -rf", "a%2Fb", "a\\b", "a\tb", "$(id)", "`id`", "a'b", "a\"b",
        "\u0430\u0431", "a\u200bb", "tz-\u212a",
    ]):
        add("name-{}".format(i), _body(name=name), 422, "name")

    # images: 422
    for i, image in enumerate([
        "", " ", "UPPER:latest", "Mock-App:latest", "a b", "mock-app:", ":latest", "mock-app:latest\n",
        "-mock", "mock-app:lat est", "mock-app@sha256:short", "mock-app:" + "t" * 129, "x" * 256,
        "busybox:latest", "mock-app-evil:latest", "registry.example.com/mock-app:latest", "../mock-app",
        "mock-app:latest\x00", "\u00e9", "mock-app//x", "sha256:" + "0" * 64, "0123456789abcdef" * 4,
        "0123456789abcdef" * 4 + ":latest",
    ]):
        add("image-{}".format(i), _body(image=image), 422, "image")

    # networks: 422
    for i, network in enumerate(["host", "container:other", "container:" + TABLE_NAME, "", " ", "a b", "-net",
                                 "n" * 129, "net\n", "\u00e9", "ns:/proc/1/ns/net"]):
        add("network-{}".format(i), _body(network=network), 422, "network")

    # labels that claim ownership or another instance's routes, or are malformed: 422
    for i, (key, value) in enumerate([
        ("wakeproxy.managed", "true"), ("wakeproxy.managed", "false"), ("WAKEPROXY.MANAGED", "true"),
        ("wakeproxy.managed.x", "true"), ("Wakeproxy.Managed", "true"),
        ("traefik.http.routers.other.rule", "Host(`x`)"), ("traefik.http.routers.other.entrypoints", "web"),
        ("traefik.http.routers.wpt-bad-inputx.rule", "Host(`x`)"), ("traefik.http.routers.wpt-bad.rule", "Host(`x`)"),
        ("traefik.http.services.other.loadbalancer.server.port", "80"),
        ("traefik.http.middlewares.other.headers.customrequestheaders.X", "1"),
        ("traefik.tcp.routers.other.rule", "HostSNI(`*`)"),
        ("traefik.udp.services.other.loadbalancer.server.port", "53"),
        ("traefik.HTTP.Routers.other.rule", "Host(`x`)"), ("traefik.http.routers", "x"),
        ("traefik.http.routers.x", "x"),
        ("traefik.http", "x"), ("traefik.http.routers..rule", "x"), ("traefik.http.routers.{}".format(TABLE_NAME), "x"),
        ("traefik.http.routers.{}.service".format(TABLE_NAME), "other"),
        ("traefik.http.routers.{}.service".format(TABLE_NAME), "other@docker"),
        ("traefik.http.routers.{}.service".format(TABLE_NAME), "api@internal"),
        ("traefik.http.serverstransports.other.insecureskipverify", "true"),
        ("wakeproxy.router", "other"), ("wakeproxy.router", ""), ("wakeproxy.router", "wpt-bad"),
        ("wakeproxy.port", "abc"), ("wakeproxy.port", "0"), ("wakeproxy.port", "70000"), ("wakeproxy.port", "-1"),
        ("wakeproxy.port", "\uff18\uff10"), ("wakeproxy.port", ""),
        # issue 11: the owner's marks, ports outside --allow-port, URLs to probe, other owners' instances
        ("wakeproxy.owner", "alice"), ("WAKEPROXY.OWNER", "alice"), ("wakeproxy.owner.x", "1"),
        ("wakeproxy.creating", "1"), ("wakeproxy.port", "22"), ("wakeproxy.port", "80"), ("wakeproxy.port", "1023"),
        ("wakeproxy.health-check", "http://127.0.0.1:8008/login"), ("wakeproxy.health-check", "//127.0.0.1:8008/x"),
        ("wakeproxy.health-check", "https://example.com/"), ("wakeproxy.health-check", "status"),
        ("wakeproxy.health-check", "/a b"), ("wakeproxy.health-check", "/a\\b"), ("health-check", "http://minion-1/x"),
        ("health-check", "//minion-1/x"), ("wakeproxy.depends-on", "other"), ("wakeproxy.depends-on", "a,,b"),
        ("wakeproxy.depends-on", TABLE_NAME), ("wakeproxy.depends-on", ","), ("wakeproxy.group", ""),
        ("wakeproxy.group", "a b"), ("wakeproxy.group", "../g"),
        # issue 11: Traefik labels parsed strictly; rules and priorities only with --allow-router-rules
        ("traefik..http.routers.{}.rule".format(TABLE_NAME), "PathPrefix(`/`)"),
        ("traefik.http..routers.{}.rule".format(TABLE_NAME), "PathPrefix(`/`)"),
        ("traefik.http.routers.{}..rule".format(TABLE_NAME), "PathPrefix(`/`)"),
        ("traefik.http.routers.{}.rule.".format(TABLE_NAME), "PathPrefix(`/`)"),
        ("traefik.http.routers.{}.rule".format(TABLE_NAME), "PathPrefix(`/`)"),
        ("traefik.http.routers.{}.RULE".format(TABLE_NAME), "PathPrefix(`/`)"),
        ("Traefik.Http.Routers.{}.Rule".format(TABLE_NAME), "PathPrefix(`/`)"),
        ("traefik.http.routers.{}.priority".format(TABLE_NAME), "2147483647"),
        ("traefik.tcp.routers.{}.rule".format(TABLE_NAME), "HostSNI(`*`)"),
        ("traefik.http.router\u017f.other.rule", "x"), ("traefik.http.rooters.{}.rule".format(TABLE_NAME), "x"),
        ("traefik.grpc.routers.{}.rule".format(TABLE_NAME), "x"), ("traefik.foo", "x"), ("traefik", "x"),
        ("traefik.tls.stores.default.defaultcertificate.certfile", "/etc/ssl/x.pem"),
        ("traefik.tls.options.default.minversion", "VersionTLS10"),
        ("traefik.udp.middlewares.{}.x".format(TABLE_NAME), "x"),
        ("traefik.http.services.{}.loadbalancer.server.url".format(TABLE_NAME), "http://127.0.0.1:8008"),
        ("traefik.http.services.{}.loadbalancer.servers[0].url".format(TABLE_NAME), "http://127.0.0.1:8008"),
        ("traefik.http.services.{}.weighted.services[0].name".format(TABLE_NAME), "api@internal"),
        ("traefik.http.services.{}.mirroring.service".format(TABLE_NAME), "api@internal"),
        ("traefik.http.middlewares.{}.forwardauth.address".format(TABLE_NAME), "http://127.0.0.1:8008/login"),
        ("traefik.http.middlewares.{}.errors.service".format(TABLE_NAME), "api@internal"),
        ("traefik.http.middlewares.{}.plugin.x.y".format(TABLE_NAME), "1"),
        ("", "x"), (" ", "x"), ("a b", "x"), ("a=b", "x"), ("a\nb", "x"), ("a\x00", "x"), ("k" * 257, "x"),
        ("ok", "v" * 4097), ("ok", "a\x00b"),
    ]):
        add("label-{}".format(i), _labels({key: value}), 422, "labels")
    add("labels-too-many", _labels({"l{}".format(i): "x" for i in range(65)}), 422, "labels")
    add("labels-huge", _labels({"l{}".format(i): "x" for i in range(10000)}), 422, "labels")

    # environment: 422
    for i, (key, value) in enumerate([
        ("", "x"), ("1A", "x"), ("A-B", "x"), ("A B", "x"), ("A=B", "x"), ("\u00c9", "x"), ("A\n", "x"),
        ("A\x00", "x"), ("A" * 257, "x"), ("A", "v" * 4097), ("A", "a\x00b"), ("PATH;", "x"),
    ]):
        add("env-{}".format(i), _envs({key: value}), 422, "envs")
    add("envs-too-many", _envs({"E{}".format(i): "x" for i in range(65)}), 422, "envs")

    # huge: over --max-api-body, whatever is in it: 413
    add("huge-spaces", b" " * (TABLE_MAX_BODY + 1), 413)
    add("huge-valid-json", _body(labels={"big": "x" * (TABLE_MAX_BODY + 10)}), 413)
    add("huge-garbage", b"\xff" * (TABLE_MAX_BODY * 2), 413)
    add("huge-name", _body(name="a" * (TABLE_MAX_BODY + 1)), 413)
    return cases


BAD_BODIES = _cases()


def assert_table_problem(case, status: int, doc: dict) -> None:
    """What every answer to a table case must be (shared by the API tests)."""
    id, _, expected, field = case
    if status != expected:
        raise AssertionError("{}: answered {} {}, expected {}".format(id, status, doc, expected))
    if doc.get("status") != expected or not doc.get("detail"):
        raise AssertionError("{}: not a problem document: {}".format(id, doc))
    if field is not None and expected == 422:
        fields = [e["field"] for e in doc.get("errors", [])]
        if not any(f.startswith(field) for f in fields):
            raise AssertionError("{}: errors {} do not name {!r}".format(id, fields, field))


class TableTests(SynchronousTestCase):
    def test_table_has_200_distinct_cases(self):
        self.assertGreaterEqual(len(BAD_BODIES), 200)
        self.assertEqual(len({c[0] for c in BAD_BODIES}), len(BAD_BODIES))
        self.assertEqual(len({c[1] for c in BAD_BODIES}), len(BAD_BODIES))

    def test_every_bad_body_is_refused_with_a_reason(self):
        for case in BAD_BODIES:
            id, body, status, field = case
            if status == 413:
                continue  # size is the API's check, before parsing
            try:
                check_deploy(parse_json(body), TABLE_POLICY)
            except BodyError as e:
                doc = {"status": e.status, "detail": e.detail, "errors": [x.as_dict() for x in e.errors]}
                assert_table_problem(case, e.status, doc)
            else:
                self.fail("{}: accepted".format(id))

    def test_the_base_body_is_valid(self):
        spec = check_deploy(parse_json(_body()), TABLE_POLICY)
        self.assertEqual(spec, CreateSpec(name=TABLE_NAME, image="mock-app:latest", network="none", init=True))

    def test_init_defaults_to_true_and_can_be_turned_off(self):
        body = json.loads(_body())
        self.assertFalse(check_deploy(dict(body, init=False), TABLE_POLICY).init)
        for wrong in ("yes", 1, None, []):
            with self.assertRaises(BodyError) as caught:
                check_deploy(dict(body, init=wrong), TABLE_POLICY)
            self.assertEqual([e.field for e in caught.exception.errors], ["init"])


#: the body the old spawner's examples/cookie-routing/create-minions.sh sends (its scripts log in as foo/bar).
#: Refused by default since issue 11: its health check is a URL (wakeproxy would request any URL a tenant
#: names), and its router rule would outrank other routes (--allow-router-rules permits it).
SEED_BODY = {
    "name": "minion-1",
    "network": "traefiknet",
    "image": "mock-app:latest",
    "labels": {
        "health-check": "http://minion-1:9000/status",
        "traefik.enable": "true",
        "traefik.http.services.minion-1.loadbalancer.server.port": "9000",
        "traefik.http.routers.minion-1.entrypoints": "websecure",
        "traefik.http.routers.minion-1.rule": "HeadersRegexp(\"Cookie\",\".*instance=minion-1.*\")",
        "traefik.http.routers.minion-1.tls": "true",
    },
    "envs": {"TZ": "Etc/UTC", "CONNSTR": "db 1", "IDLE": "1m"},
}

#: The seed's body as a default wakeproxy accepts it: a health-check path, no router rule (--router-labels
#: writes the anchored one).
SEED_BODY_ACCEPTED = dict(SEED_BODY, labels={k: v for k, v in dict(SEED_BODY["labels"], **{
    "health-check": "/status"}).items() if not k.endswith(".rule")})


class AcceptedTests(SynchronousTestCase):
    def check(self, doc, policy=CreatePolicy()):
        return check_deploy(parse_json(json.dumps(doc).encode()), policy)

    def test_seed_body(self):
        spec = self.check(SEED_BODY_ACCEPTED)
        self.assertEqual(spec.name, "minion-1")
        self.assertEqual(spec.network, "traefiknet")
        self.assertEqual(spec.image, "mock-app:latest")
        self.assertEqual(dict(spec.labels), SEED_BODY_ACCEPTED["labels"])
        self.assertEqual(dict(spec.env), SEED_BODY["envs"])

    def test_seed_body_as_sent_is_refused_by_default(self):
        """Its URL health check always; its router rule unless --allow-router-rules."""
        with self.assertRaises(BodyError) as e:
            self.check(SEED_BODY)
        self.assertEqual({x.field for x in e.exception.errors},
                         {"labels.health-check", "labels.traefik.http.routers.minion-1.rule"})
        with self.assertRaises(BodyError) as e:
            self.check(SEED_BODY, CreatePolicy(allow_router_rules=True))
        self.assertEqual([x.field for x in e.exception.errors], ["labels.health-check"])

    def test_minimal_body(self):
        spec = self.check({"name": "ab", "image": "mock-app"})
        self.assertEqual(spec, CreateSpec(name="ab", image="mock-app", init=True))

    def test_own_routes_and_prefixed_ones(self):
        labels = {
            "traefik.http.routers.m1.rule": "Host(`m1.example`)",
            "traefik.http.routers.m1-api.rule": "Host(`api.m1.example`)",
            "traefik.http.routers.m1-api.service": "m1-api@docker",
            "traefik.http.routers.m1.service": "m1",
            "traefik.http.services.m1-web.loadbalancer.server.port": "80",
            "traefik.http.middlewares.m1-strip.stripprefix.prefixes": "/m1",
            "traefik.tcp.routers.m1-db.rule": "HostSNI(`*`)",
            "traefik.docker.network": "traefiknet",
            "wakeproxy.router": "m1-api",
            "wakeproxy.port": "9000",
            "wakeproxy.health-check": "/status",
        }
        policy = CreatePolicy(allow_router_rules=True)
        self.assertEqual(dict(self.check({"name": "m1", "image": "x", "labels": labels}, policy).labels), labels)
        without_rules = {k: v for k, v in labels.items() if not k.endswith(".rule")}
        self.assertEqual(dict(self.check({"name": "m1", "image": "x", "labels": without_rules}).labels), without_rules)

    def test_images_allowed_by_globs(self):
        policy = CreatePolicy(allowed_images=("mock-app:*", "registry.local:5000/team/*"))
        for image in ("mock-app", "mock-app:latest", "mock-app:1.2", "registry.local:5000/team/app:v1"):
            self.assertEqual(self.check({"name": "ab", "image": image}, policy).image, image)
        for image in ("mock-appx:1", "other:latest", "registry.local:5000/other/app:v1"):
            with self.assertRaises(BodyError) as e:
                self.check({"name": "ab", "image": image}, policy)
            self.assertIn("--allow-image", e.exception.detail)

    def test_host_network_only_when_allowed(self):
        with self.assertRaises(BodyError) as e:
            self.check({"name": "ab", "image": "x", "network": "host"})
        self.assertIn("--allow-host-network", e.exception.detail)
        self.assertEqual(self.check({"name": "ab", "image": "x", "network": "host"},
                                    CreatePolicy(allow_host_network=True)).network, "host")

    def test_name_pattern(self):
        policy = CreatePolicy(name_pattern="^team-[a-z]+$")
        self.assertEqual(self.check({"name": "team-a", "image": "x"}, policy).name, "team-a")
        with self.assertRaises(BodyError) as e:
            self.check({"name": "other", "image": "x"}, policy)
        self.assertIn("--name-pattern", e.exception.detail)
        # Docker's rules apply whatever the pattern says
        with self.assertRaises(BodyError):
            self.check({"name": "a/b", "image": "x"}, CreatePolicy(name_pattern=".*"))

    def test_custom_owner_label_is_reserved_and_so_is_the_default(self):
        policy = CreatePolicy(owner=OwnerLabel("acme.owner", "wp"))
        for key in ("acme.owner", "ACME.OWNER", "wakeproxy.managed"):
            with self.assertRaises(BodyError) as e:
                self.check({"name": "ab", "image": "x", "labels": {key: "wp"}}, policy)
            self.assertEqual(e.exception.errors[0].field, "labels." + key)

    def test_unknown_key_names_the_key_and_hints_at_case(self):
        with self.assertRaises(BodyError) as e:
            self.check({"NAME": "a", "image": "x"})
        self.assertEqual(e.exception.status, 422)
        self.assertIn('"NAME"', e.exception.detail)
        self.assertIn("lower case", e.exception.detail)
        self.assertEqual({x.field for x in e.exception.errors}, {"NAME", "name"})


class LoginBodyTests(SynchronousTestCase):
    def test_table(self):
        good = {"username": "foo", "password": "bar"}
        self.assertEqual(check_login(good), ("foo", "bar"))
        cases = [
            ([], ""), ("x", ""), (None, ""), ({}, "username"), ({"username": "foo"}, "password"),
            ({"password": "bar"}, "username"), (dict(good, username=""), "username"),
            (dict(good, password=""), "password"), (dict(good, password=1), "password"),
            (dict(good, username=None), "username"), (dict(good, Username="x"), "Username"),
            (dict(good, password="x" * 1025), "password"), (dict(good, password="a\x00"), "password"),
        ]
        for doc, field in cases:
            with self.assertRaises(BodyError) as e:
                check_login(doc)
            self.assertEqual(e.exception.status, 422, doc)
            self.assertIn(field, [x.field for x in e.exception.errors], doc)

    def test_errors_never_repeat_the_password(self):
        with self.assertRaises(BodyError) as e:
            check_login({"username": "foo", "password": "s3cret\x00", "extra": 1})
        self.assertNotIn("s3cret", e.exception.detail)
