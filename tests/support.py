"""
What the integration tests share: the Docker engine (required: a missing engine fails the test, it
never silently skips it), free loopback ports, unique names and cleanup of what a test created.
"""

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import types
import uuid
from typing import Optional

import docker

from bench.ports import free_port

__all__ = ["MOCK_IMAGE", "TEST_OWNER", "check_problem", "docker_url", "ScriptProcess", "Twistd", "start_wakeproxy",
           "can_connect", "deploy_body", "docker_client", "free_port", "import_script", "metric", "remove_containers",
           "start_script", "unique_name"]

MOCK_IMAGE = os.environ.get("WAKEPROXY_TEST_IMAGE", "mock-app:latest")

#: The owner label of this test run: the default of every C{twistd wakeproxy} and every L{tests.dockerapp.Instances}
#: the tests start, so that no test's wakeproxy (its idle stopper above all) ever sees, wakes or stops a container it
#: did not create — neither the user's own C{wakeproxy.managed=true} containers (the demo's, say) nor those of
#: another test run on the same engine.
TEST_OWNER = "wakeproxy.test-run={}".format(uuid.uuid4().hex[:12])


def docker_url() -> str:
    """
    The engine the tests use: C{$DOCKER_HOST}, else the local socket. Read at each call, so that a test
    module can point the same tests (and the wakeproxy processes they start) at another engine
    (tests/test_podman.py).
    """
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def docker_client() -> docker.APIClient:
    """A low-level client; raise with a sentence telling how to get an engine when none answers."""
    url = docker_url()
    client = docker.APIClient(base_url=url, version="auto", timeout=60)
    try:
        client.ping()
    except Exception as e:
        raise RuntimeError("no Docker engine answers at {} ({}); run `make test`, which starts one".format(url, e))
    return client


def deploy_body(name: str, port: Optional[int] = None, **changes) -> dict:
    """A deploy API body for a host-network mock_app instance named C{name} listening on C{port} (a free one)."""
    port = port or free_port()
    body = {"name": name, "network": "host", "image": MOCK_IMAGE, "labels": {"wakeproxy.port": str(port)},
            "envs": {"PORT": str(port), "HOST": "127.0.0.1", "IDLE": "0"}}
    body.update(changes)
    return body


def unique_name(prefix: str = "wpt") -> str:
    return "{}-{}".format(prefix, uuid.uuid4().hex[:10])


def remove_containers(client: docker.APIClient, *names: str) -> None:
    for name in names:
        try:
            client.remove_container(name, force=True, v=True)
        except docker.errors.NotFound:
            pass


class Twistd:
    """
    C{twistd -n wakeproxy} as a child process, run from outside the source tree so that the installed
    package (and its plugin) is what runs. C{start} waits until both listeners accept connections.
    """

    def __init__(self, *args: str, env: Optional[dict] = None, listen: str = "tcp:{port}:interface=127.0.0.1"):
        self.proxy_port = free_port()
        self.api_port = free_port()
        if "--owner-label" not in args:
            args = ("--owner-label", TEST_OWNER) + args
        self.args = [
            "--listen", listen.format(port=self.proxy_port),
            "--api-listen", "tcp:{}:interface=127.0.0.1".format(self.api_port),
        ] + list(args)
        self.env = dict(os.environ, **(env or {}))
        self.env.pop("PYTHONPATH", None)
        self.process: Optional[subprocess.Popen] = None
        self.logfile = tempfile.NamedTemporaryFile(prefix="wakeproxy-", suffix=".log", delete=False)

    @property
    def proxy_url(self) -> str:
        return "http://127.0.0.1:{}".format(self.proxy_port)

    @property
    def api_url(self) -> str:
        return "http://127.0.0.1:{}".format(self.api_port)

    def start(self, timeout: float = 15.0) -> "Twistd":
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        self.process = subprocess.Popen(
            [twistd, "-n", "--pidfile=", "wakeproxy"] + self.args,
            cwd=tempfile.gettempdir(), env=self.env, stdout=self.logfile, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        for port in (self.proxy_port, self.api_port):
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError("twistd exited with {}:\n{}".format(self.process.returncode, self.log()))
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError("twistd did not listen on {} in {}s:\n{}".format(port, timeout, self.log()))
                    time.sleep(0.05)
        return self

    def stop(self, timeout: float = 5.0) -> int:
        """SIGTERM, then wait; return the exit status (143 is the normal one: twistd re-raises SIGTERM)."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise

    def log(self) -> str:
        with open(self.logfile.name, encoding="utf-8", errors="replace") as f:
            return f.read()


def start_wakeproxy(testcase, *args: str, env: Optional[dict] = None, timeout: float = 10.0,
                    listen: Optional[str] = None, server: Optional[Twistd] = None) -> Twistd:
    """
    C{twistd wakeproxy} for one test: started, waited for until its API says it has read the engine, and
    stopped at cleanup, when its log must hold no traceback. C{server}: one made beforehand (its ports
    known, e.g. to give replicas each other's address); C{args} are then added to its own.
    """
    import requests

    if server is None:
        server = Twistd(*args, env=env, **({"listen": listen} if listen else {}))
    else:
        server.args += list(args)
    server.start()

    def stop() -> None:
        server.stop()
        log = server.log()
        testcase.assertNotIn("Traceback", log, log[-3000:])

    testcase.addCleanup(stop)
    deadline = time.monotonic() + timeout
    while requests.get(server.api_url + "/healthz", timeout=5).status_code != 200:
        testcase.assertLess(time.monotonic(), deadline, "wakeproxy never saw the Docker engine")
        time.sleep(0.05)
    return server


def metric(server: Twistd, name: str, labels: str = "") -> float:
    """
    One sample of wakeproxy's C{GET /metrics} (0 when absent), e.g. C{metric(server, "wakeproxy_wakes_total",
    'outcome="failed"')}.
    """
    import requests

    text = requests.get(server.api_url + "/metrics", timeout=10).text
    key = "{}{{{}}}".format(name, labels) if labels else name
    for line in text.splitlines():
        if line.startswith(key + " "):
            return float(line.split()[-1])
    return 0.0


def can_connect(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:C{port}."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def import_script(name: str, path) -> types.ModuleType:
    """Import the Python file C{path} (a script, not in a package) as the module C{name}."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class ScriptProcess:
    """
    A Python script (C{sys.executable -u path}) as a child process with exactly the environment C{env},
    meant to listen on 127.0.0.1:C{port}; its stdout is discarded, its stderr kept in a temporary file
    (L{log}). C{proc} is its C{subprocess.Popen} once started.
    """

    def __init__(self, path, env: dict, port: int):
        self.path = str(path)
        self.env = env
        self.port = port
        self.proc: Optional[subprocess.Popen] = None
        self.log_file = None

    @property
    def url(self) -> str:
        return "http://127.0.0.1:{}".format(self.port)

    def start(self, testcase, timeout: float = 10.0, wait: bool = True) -> "ScriptProcess":
        """
        Start the script; the test's cleanup kills it and closes its log. With C{wait}, return once it
        listens (L{wait_listening}).
        """
        self.log_file = tempfile.TemporaryFile()
        testcase.addCleanup(self.log_file.close)
        self.proc = subprocess.Popen([sys.executable, "-u", self.path], env=self.env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=self.log_file)
        testcase.addCleanup(self._kill)
        if wait:
            self.wait_listening(timeout)
        return self

    def _kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def log(self) -> str:
        """Everything the script wrote to stderr so far."""
        self.log_file.seek(0)
        return self.log_file.read().decode("utf-8", "replace")

    def wait_listening(self, timeout: float = 10.0) -> None:
        """Poll-connect until the script listens; AssertionError (with its log) if it exits or times out."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise AssertionError("{} exited with {} before listening:\n{}".format(
                    self.path, self.proc.returncode, self.log()))
            if can_connect(self.port):
                return
            time.sleep(0.02)
        raise AssertionError("{} not listening after {}s:\n{}".format(self.path, timeout, self.log()))

    def wait_exit(self, timeout: float) -> int:
        """Wait for the script to exit; return its status (AssertionError, with its log, after C{timeout})."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("{} still running after {}s:\n{}".format(self.path, timeout, self.log()))


def start_script(testcase, path, env: dict, port: int, timeout: float = 10.0, wait: bool = True) -> ScriptProcess:
    """L{ScriptProcess}C{(path, env, port).start(testcase, timeout, wait)}."""
    return ScriptProcess(path, env, port).start(testcase, timeout, wait)


def check_problem(testcase, status: int, content_type: str, doc: dict, detail: Optional[str] = None) -> dict:
    """Assert that an answer is an RFC 9457 problem with C{status} and a non-empty C{detail}; return it."""
    testcase.assertEqual(content_type, "application/problem+json")
    testcase.assertEqual(doc["status"], status)
    testcase.assertTrue(doc["detail"])
    if detail is not None:
        testcase.assertIn(detail, doc["detail"])
    return doc
