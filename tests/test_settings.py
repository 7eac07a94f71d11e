"""The options' meaning as frozen settings (wakeproxy.settings): defaults, every value, every refusal."""

import dataclasses
import os
import subprocess
import sys

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from wakeproxy.http.selector import parse_selector
from wakeproxy.runtime.interface import OwnerLabel
from wakeproxy.settings import Settings, from_options, parse_port_range
from wakeproxy.tap import Options


def parse(*argv: str) -> Settings:
    options = Options()
    options.parseOptions(list(argv))
    return options.settings


class DefaultsTests(SynchronousTestCase):
    def setUp(self):
        saved = os.environ.pop("DOCKER_HOST", None)
        if saved is not None:
            self.addCleanup(os.environ.__setitem__, "DOCKER_HOST", saved)

    def test_the_defaults_are_the_options_defaults(self):
        self.assertEqual(parse(), Settings())

    def test_settings_are_frozen(self):
        settings = parse()
        for group, field in ((settings, "allow_ports"), (settings.proxy, "listen"), (settings.waking, "max_held"),
                             (settings.api, "passwd"), (settings.access, "mode"), (settings.runtime, "threads")):
            with self.assertRaises(dataclasses.FrozenInstanceError):
                setattr(group, field, None)

    def test_docker_host_is_the_default_engine(self):
        os.environ["DOCKER_HOST"] = "tcp://127.0.0.1:2375"
        self.addCleanup(os.environ.pop, "DOCKER_HOST", None)
        self.assertEqual(parse().runtime.docker_url, "tcp://127.0.0.1:2375")
        self.assertEqual(parse("--docker-url", "unix:///x.sock").runtime.docker_url, "unix:///x.sock")

    def test_only_from_options_reads_option_keys(self):
        """No module but settings.py and tap.py names an option key: every part gets plain values."""
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        found = subprocess.run(["grep", "-rnE", r"options(\[|\.get\()", "--include=*.py", "wakeproxy"], cwd=root,
                               capture_output=True, text=True).stdout.splitlines()
        self.assertEqual([line for line in found if not line.startswith(("wakeproxy/settings.py", "wakeproxy/tap.py"))],
                         [])


class ValuesTests(SynchronousTestCase):
    def test_every_option_lands_in_its_field(self):
        cases = [
            (["--docker-url", "unix:///d.sock"], "runtime.docker_url", "unix:///d.sock"),
            (["--owner-label", "team=a"], "runtime.owner", OwnerLabel("team", "a")),
            (["--docker-threads", "3"], "runtime.threads", 3),
            (["--listen", "tcp:1", "--listen", "unix:/p"], "proxy.listen", ("tcp:1", "unix:/p")),
            (["--select", "path:u", "--keep-path"], "proxy.select", "path:u"),
            (["--select", "path:u", "--keep-path"], "proxy.keep_path", True),
            (["--upstream", "http://127.0.0.1:9"], "proxy.upstream", "http://127.0.0.1:9"),
            (["--upstream", "direct"], "proxy.direct", True),
            (["--home-url", "/h"], "proxy.home_url", "/h"),
            (["--home-path", "/p"], "proxy.home_path", "/p"),
            (["--home-upstream", "http://h"], "proxy.home_upstream", "http://h"),
            (["--max-upstream-per-instance", "2"], "proxy.max_upstream_per_instance", 2),
            (["--head-timeout", "1s"], "proxy.head_timeout", 1.0),
            (["--body-timeout", "2s"], "proxy.body_timeout", 2.0),
            (["--keepalive-timeout", "3s"], "proxy.keepalive_timeout", 3.0),
            (["--connect-timeout", "4s"], "proxy.connect_timeout", 4.0),
            (["--upstream-timeout", "5s"], "proxy.upstream_timeout", 5.0),
            (["--upstream-timeout", "0"], "proxy.upstream_timeout", None),
            (["--upstream-idle-timeout", "6s"], "proxy.upstream_idle_timeout", 6.0),
            (["--max-head-bytes", "1000"], "proxy.max_head_bytes", 1000),
            (["--max-body", "7"], "proxy.max_body", 7),
            (["--loading-page"], "proxy.loading_page", True),
            (["--access-log", "-", "--access-log-format", "combined"], "proxy.access_log", "-"),
            (["--access-log", "-", "--access-log-format", "combined"], "proxy.access_log_format", "combined"),
            (["--drain-timeout", "1m"], "proxy.drain_timeout", 60.0),
            (["--wake-timeout", "1m"], "waking.wake_timeout", 60.0),
            (["--ready-delay", "500ms"], "waking.ready_delay", 0.5),
            (["--stop-timeout", "3"], "waking.stop_timeout", 3.0),
            (["--max-held", "5"], "waking.max_held", 5),
            (["--max-held-per-instance", "4"], "waking.max_held_per_instance", 4),
            (["--wake-rate", "5/1m"], "waking.wake_rate", (5, 60.0)),
            (["--idle-timeout", "30s"], "waking.idle_timeout", 30.0),
            (["--idle-timeout", "0"], "waking.idle_timeout", None),
            (["--idle-timeout", "Never"], "waking.idle_timeout", None),
            (["--idle-tunnel", "open"], "waking.idle_tunnel", "open"),
            (["--traefik-api", "http://t:8080"], "waking.traefik_api", "http://t:8080"),
            (["--no-wake-path", "/a*"], "waking.no_wake_paths", ("/a*",)),
            (["--no-wake-user-agent", "Bot"], "waking.no_wake_user_agents", ("Bot",)),
            (["--api-listen", "tcp:9"], "api.listen", "tcp:9"),
            (["--no-auth"], "api.no_auth", True),
            (["--token-ttl", "1h"], "api.token_ttl", 3600.0),
            (["--max-api-body", "10"], "api.max_body", 10),
            (["--name-pattern", "^x"], "api.name_pattern", "^x"),
            (["--allow-image", "a:*", "--allow-image", "b"], "api.allow_images", ("a:*", "b")),
            (["--allow-host-network"], "api.allow_host_network", True),
            (["--pull", "missing"], "api.pull", True),
            (["--pull", "never"], "api.pull", False),
            (["--trusted-proxy", "10.0.0.0/8"], "trusted_proxies", (__import__("ipaddress").ip_network("10.0.0.0/8"),)),
            (["--allow-port", "80"], "allow_ports", ((80, 80),)),
        ]
        for argv, path, expected in cases:
            value = parse(*argv)
            for name in path.split("."):
                value = getattr(value, name)
            self.assertEqual(value, expected, argv)

    def test_the_selector_is_the_one_asked_for(self):
        kept = parse("--select", "path:u", "--keep-path").proxy.selector()
        self.assertEqual(kept, parse_selector("path:u", keep_path=True))
        self.assertNotEqual(kept, parse_selector("path:u"))

    def test_from_a_plain_mapping(self):
        options = Options()
        options.parseOptions(["--max-held", "3"])
        self.assertEqual(from_options(dict(options)), options.settings)


class RefusalTests(SynchronousTestCase):
    def test_each_bad_value_is_a_sentence_naming_its_option(self):
        cases = [
            (["--wake-timeout", "0"], "--wake-timeout: must be more than 0 seconds"),
            (["--wake-rate", "lots"], "--wake-rate:"),
            (["--idle-timeout", "later"], "--idle-timeout:"),
            (["--ready-delay", "-1"], "--ready-delay:"),
            (["--upstream-timeout", "x"], "--upstream-timeout:"),
            (["--docker-threads", "0"], "--docker-threads: must be at least 1, got 0"),
            (["--max-api-body", "1k"], "--max-api-body: '1k' is not a whole number"),
            (["--max-body", "big"], "--max-body: 'big' is not a whole number"),
            (["--access-log-format", "xml"], "--access-log-format: use 'json' or 'combined', got 'xml'"),
            (["--access-log", "/nonexistent/dir/log"], "--access-log: no such directory"),
            (["--idle-tunnel", "never"], "--idle-tunnel: use 'data' or 'open', got 'never'"),
            (["--home-upstream", "h:80"], "--home-upstream:"),
            (["--passwd", "/nonexistent/passwd"], "--passwd: no such file"),
            (["--name-pattern", "("], "--name-pattern: not a regular expression"),
            (["--pull", "always"], "--pull: use 'never' or 'missing', got 'always'"),
            (["--select", "cookie"], "--select:"),
            (["--no-wake-user-agent", "("], "--no-wake-user-agent:"),
        ]
        for argv, expected in cases:
            with self.assertRaises(usage.UsageError, msg=argv) as caught:
                parse(*argv)
            self.assertIn(expected, str(caught.exception), argv)

    def test_port_ranges(self):
        self.assertEqual(parse_port_range(" 8080 "), (8080, 8080))
        self.assertEqual(parse_port_range("1024-65535"), (1024, 65535))
        for bad in ("0", "9-8", "65536", "a-b", ""):
            self.assertRaises(ValueError, parse_port_range, bad)


class HelpTests(SynchronousTestCase):
    def test_the_options_import_no_part(self):
        """C{twistd wakeproxy --help} imports wakeproxy.tap: nothing that talks to Docker or serves requests."""
        code = ("import sys, wakeproxy.tap; print(sorted(m for m in sys.modules if m.startswith(("
                "'wakeproxy.runtime.docker', 'docker', 'wakeproxy.http.relay', 'wakeproxy.waking.waker', "
                "'wakeproxy.api.resources', 'wakeproxy.proxy'))))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        self.assertEqual(out.strip(), "[]")
