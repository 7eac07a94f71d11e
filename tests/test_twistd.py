"""C{twistd wakeproxy} as users run it: installed package, both listeners, clean SIGTERM, usage errors."""

import http.client
import json
import os
import subprocess
import sys
import time

import pytest
from twisted.trial.unittest import SynchronousTestCase

from tests.support import Twistd


def _get(port: int, path: str, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def _twistd(*args: str) -> subprocess.CompletedProcess:
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    return subprocess.run([twistd, "-n", "--pidfile=", "wakeproxy"] + list(args), capture_output=True, text=True,
                          timeout=30, cwd="/", env=env)


class UsageTests(SynchronousTestCase):
    def test_help_lists_options_with_defaults(self):
        result = _twistd("--help")
        self.assertEqual(result.returncode, 0, result.stderr)
        for option in ("--listen", "--api-listen", "--docker-url", "--owner-label", "--select", "--wake-timeout",
                       "--upstream", "--max-held", "--max-body", "--head-timeout", "[default: tcp:8008:interface=127.0.0.1]",
                       "[default: tcp:8000]", "[default: wakeproxy.managed=true]", "--access", "--access-key",
                       "--access-cookie", "[default: wakeproxy_access]", "--access-ttl", "[default: 12h]",
                       "--forward-auth-headers", "--forward-auth-cache", "--metrics-auth", "--allow-port",
                       "--allow-router-rules", "--router-labels", "--runtime", "[default: docker]"):
            self.assertIn(option, " ".join(result.stdout.split()))

    def test_bad_values_are_one_line_usage_errors(self):
        cases = [
            (["--wake-timeout", "soon"], "--wake-timeout"),
            (["--owner-label", "nolabel"], "--owner-label"),
            (["--max-held", "0"], "--max-held"),
            (["--max-held", "many"], "--max-held"),
            (["--upstream", "ftp://x"], "--upstream"),
            (["--listen", "tcp:notaport"], "bad endpoint"),
            (["--api-listen", "nosuchkind:1"], "bad endpoint"),
            (["--upstream-ca", "/nonexistent.pem"], "--upstream-ca"),
            (["--select", "sniff:x"], "--select"),
            (["--access", "closed"], "--access"),
            (["--access", "signed"], "--access-key"),
            (["--access-key", "/nonexistent.keys"], "--access-key"),
            (["--allow-port", "99999"], "--allow-port"),
            (["--runtime", "kubernetes"], "--runtime"),
        ]
        for args, expected in cases:
            result = _twistd(*args)
            self.assertNotEqual(result.returncode, 0, args)
            self.assertNotIn("Traceback", result.stderr + result.stdout, args)
            # twistd prints the usage text, then the error as its last line: one sentence, naming the option.
            last = (result.stderr + result.stdout).strip().splitlines()[-1]
            self.assertIn("twistd -n: ", last, args)
            self.assertIn(expected, last, args)


@pytest.mark.docker
class RunTests(SynchronousTestCase):
    def test_listeners_answer_and_sigterm_is_clean(self):
        server = Twistd().start()
        self.addCleanup(server.stop)
        deadline = time.monotonic() + 10
        while True:
            status, headers, body = _get(server.api_port, "/healthz")
            if status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body)["status"], "ok")
        status, headers, body = _get(server.proxy_port, "/", {"Accept": "application/json"})
        self.assertEqual(headers.get("Content-Type"), "application/problem+json")
        self.assertLess(status, 500 if status != 503 else 600)

        started = time.monotonic()
        code = server.stop()
        elapsed = time.monotonic() - started
        self.assertIn(code, (0, -15, 143))
        self.assertLess(elapsed, 2.0)
        log = server.log()
        self.assertNotIn("Traceback", log)
        self.assertIn("Server Shut Down", log)
        self.assertIn("--access open: ANYONE who can reach the proxy listener", log)  # no --access-key given
