# -*- test-case-name: tests.test_engine_errors -*-
"""
Issue 11, finding 8: every error the Docker SDK can raise leaves the runtime as a L{RuntimeFailure} the
API answers (503 with Retry-After for the engine's own failures), never as a bare C{requests} or socket
error (a 500). First the mapping, table-driven; then real transport failures, from the real SDK talking
to a stand-in engine on a unix socket that hangs, hangs up or answers garbage.
"""

import os
import socket
import tempfile
import threading

import docker
import docker.errors
import requests
import requests.exceptions
import urllib3.exceptions
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.test_runtime_conformance import KINDS, sdk_error
from wakeproxy.runtime.docker import DockerRuntime, runtime_failure
from wakeproxy.runtime.interface import (
    CreateSpec,
    EngineFailure,
    EngineUnavailable,
    NoSuchImage,
    NoSuchInstance,
    OwnerLabel,
    RuntimeFailure,
    WrongState,
)


def _api_error(status, cls=docker.errors.APIError):
    response = requests.Response()
    response.status_code = status
    return cls("{} Client Error".format(status), response=response, explanation="the engine says {}".format(status))


def _podman_500(message):
    response = requests.Response()
    response.status_code = 500
    return docker.errors.APIError("500 Server Error", response=response, explanation=message)


class MappingTests(SynchronousTestCase):
    """Tests for L{runtime_failure}."""

    def test_table(self):
        cases = [
            (sdk_error("timeout"), EngineUnavailable, True),
            (requests.exceptions.ConnectTimeout("x"), EngineUnavailable, True),
            (requests.exceptions.Timeout("x"), EngineUnavailable, True),
            (urllib3.exceptions.ReadTimeoutError(None, "/x", "timed out"), EngineUnavailable, True),
            (socket.timeout("timed out"), EngineUnavailable, True),
            (TimeoutError("timed out"), EngineUnavailable, True),
            (sdk_error("reset"), EngineUnavailable, False),
            (sdk_error("refused"), EngineUnavailable, False),
            (sdk_error("protocol"), EngineUnavailable, False),
            (sdk_error("socket"), EngineUnavailable, False),
            (requests.exceptions.ChunkedEncodingError("x"), EngineUnavailable, False),
            (requests.exceptions.ContentDecodingError("x"), EngineUnavailable, False),
            (requests.exceptions.JSONDecodeError("Expecting value", "<html>", 0), EngineUnavailable, False),
            (urllib3.exceptions.NewConnectionError(None, "refused"), EngineUnavailable, False),
            (ConnectionRefusedError(111, "Connection refused"), EngineUnavailable, False),
            (FileNotFoundError(2, "No such file or directory"), EngineUnavailable, False),
            (BrokenPipeError(32, "Broken pipe"), EngineUnavailable, False),
            (OSError(9, "Bad file descriptor"), EngineUnavailable, False),
            (__import__("http.client").client.RemoteDisconnected("closed"), EngineUnavailable, False),
            (__import__("http.client").client.IncompleteRead(b""), EngineUnavailable, False),
            (sdk_error("server-error"), EngineFailure, None),
            (_api_error(503), EngineFailure, None),
            (docker.errors.DockerException("Error while fetching server API version"), EngineFailure, None),
            (docker.errors.InvalidVersion("1.99"), EngineFailure, None),
            (ValueError("unexpected"), EngineFailure, None),
            (KeyError("Id"), EngineFailure, None),
            (_api_error(404, docker.errors.NotFound), NoSuchInstance, None),
            (_api_error(404, docker.errors.ImageNotFound), NoSuchImage, None),
            (_api_error(409), WrongState, None),
            (_api_error(400), RuntimeFailure, None),
            # Podman 4.3 answers these two with a 500 naming the cause at the end of its message
            (_podman_500('no container with name or ID "x" found: no such container'), NoSuchInstance, None),
            (_podman_500('creating container storage: the container name "x" is already in use by 08a9. You '
                         'have to remove that container to be able to reuse that name: that name is already in '
                         'use'), WrongState, None),
            (_podman_500("runc: runc create failed: no such container here, but more"), EngineFailure, None),
        ]
        for error, expected, timed_out in cases:
            failure = runtime_failure(error)
            self.assertIs(type(failure), expected, repr(error))
            if expected in (EngineUnavailable, EngineFailure):
                self.assertEqual((failure.status, failure.retry_after), (503, 5), repr(error))
            if timed_out is not None:
                self.assertEqual(failure.timed_out, timed_out, repr(error))
            for internal in ("localhost", "/var/run", "docker.sock", "Pool"):
                self.assertNotIn(internal, str(failure), repr(error))

    def test_statuses(self):
        self.assertEqual([c.status for c in (RuntimeFailure, NoSuchInstance, WrongState, NoSuchImage, EngineFailure,
                                             EngineUnavailable)], [502, 404, 409, 424, 503, 503])
        self.assertIsNone(RuntimeFailure.retry_after)

    def test_runtime_failures_pass_through(self):
        failure = NoSuchInstance("x")
        self.assertIs(runtime_failure(failure), failure)

    def test_every_kind_is_known(self):
        for kind in KINDS:
            self.assertIsInstance(runtime_failure(sdk_error(kind)), EngineFailure, kind)


class StandInEngine:
    """
    A unix socket where the engine should be, misbehaving as told: C{hang} (read the request, never
    answer), C{hangup} (close at once), C{garbage} (a response head promising more body than follows).
    """

    def __init__(self, mode: str):
        self.mode = mode
        self.dir = tempfile.mkdtemp(prefix="wpt-engine-")
        self.path = os.path.join(self.dir, "docker.sock")
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(self.path)
        self._server.listen(16)
        self._held = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return "unix://" + self.path

    def _serve(self):
        while not self._closed.is_set():
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            if self.mode == "hang":
                self._held.append(conn)
            elif self.mode == "hangup":
                conn.close()
            else:
                try:
                    conn.recv(65536)
                    conn.sendall(b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: 100\r\n\r\n{\"Id\": ")
                finally:
                    conn.close()

    def close(self):
        self._closed.set()
        self._server.close()
        for conn in self._held:
            conn.close()
        self._thread.join(2)
        if os.path.exists(self.path):
            os.unlink(self.path)
        os.rmdir(self.dir)


class TransportTests(TestCase):
    """The real SDK's own transport errors, through a L{DockerRuntime}, are EngineFailures."""

    timeout = 30

    def runtime(self, url: str) -> DockerRuntime:
        # A fixed API version: "auto" would ask the stand-in for its version when the client is made.
        runtime = DockerRuntime(reactor, url, OwnerLabel("wakeproxy.test", "x"), api_timeout=0.5,
                                client_factory=lambda **kw: docker.APIClient(**dict(kw, version="1.41")),
                                sweep_interval=None)
        runtime.startService()
        self.addCleanup(runtime.stopService)
        return runtime

    def engine(self, mode: str) -> StandInEngine:
        engine = StandInEngine(mode)
        self.addCleanup(engine.close)
        return engine

    @inlineCallbacks
    def test_no_answer_in_time(self):
        runtime = self.runtime(self.engine("hang").url)
        error = yield self.assertFailure(runtime.create(CreateSpec(name="m1", image="mock-app")), EngineUnavailable)
        self.assertTrue(error.timed_out)
        self.assertEqual((error.status, error.retry_after), (503, 5))
        yield self.assertFailure(runtime.start("m1"), EngineUnavailable)
        yield self.assertFailure(runtime.sweep_leftovers(), EngineUnavailable)

    @inlineCallbacks
    def test_hung_up(self):
        runtime = self.runtime(self.engine("hangup").url)
        error = yield self.assertFailure(runtime.create(CreateSpec(name="m1", image="mock-app")), EngineUnavailable)
        self.assertFalse(error.timed_out)
        yield self.assertFailure(runtime.stop("m1", 1), EngineUnavailable)

    @inlineCallbacks
    def test_garbage(self):
        runtime = self.runtime(self.engine("garbage").url)
        yield self.assertFailure(runtime.create(CreateSpec(name="m1", image="mock-app")), EngineFailure)
        yield self.assertFailure(runtime.remove("m1", force=True), EngineFailure)

    @inlineCallbacks
    def test_no_engine_at_all(self):
        directory = tempfile.mkdtemp(prefix="wpt-engine-")
        self.addCleanup(os.rmdir, directory)
        runtime = self.runtime("unix://" + os.path.join(directory, "docker.sock"))
        error = yield self.assertFailure(runtime.create(CreateSpec(name="m1", image="mock-app")), EngineUnavailable)
        self.assertNotIn(directory, str(error))
        yield self.assertFailure(runtime.pull("mock-app:latest"), EngineUnavailable)
