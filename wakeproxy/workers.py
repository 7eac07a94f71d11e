# -*- test-case-name: tests.test_workers -*-
"""
C{--workers N}: N wakeproxy replicas on one host sharing the proxy's listening sockets, so one machine
uses all its cores.

The process twistd runs (the I{first}) binds every C{--listen} socket itself, plus one internal
C{127.0.0.1:0} socket per process, then spawns N-1 workers (C{python -m twisted wakeproxy <same
options>}) that inherit those sockets (their fd numbers in C{$WAKEPROXY_WORKER}) and adopt them
(C{reactor.adoptStreamPort}); the kernel spreads new connections over every process accepting on them.
Each process is the others' C{--peer} through its internal socket, which serves only C{/peer} and
C{/healthz}; the shared secret is the C{--peer-secret-file} given, else one generated at start and
written to a 0600 file that only lives while the first process runs. Only the first process serves
the deploy API on C{--api-listen}; a peer on another host fencing an instance there fences it in every
worker too (L{wakeproxy.waking.peers.GroupFences}).

The first process supervises: a worker that exits is spawned again (back-off 0.5 s doubling to 30 s,
reset once a worker has lived a minute); on SIGTERM it sends SIGTERM to every worker (each drains as a
lone wakeproxy would) and kills those still there after C{--drain-timeout} plus 5 s. A worker asks the
kernel for SIGTERM when the first process dies (C{PR_SET_PDEATHSIG}), so none outlives it.

Only C{tcp:} and C{tcp6:} proxy listeners can be shared (refused otherwise in settings).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import sys
import tempfile
from dataclasses import dataclass, replace
from typing import Optional

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.web.resource import Resource

from wakeproxy.listeners import DEFAULT_BACKLOG

__all__ = ["ENV", "WorkerPlan", "worker_args", "worker_plan"]

log = Logger()

#: the environment variable that makes a process a worker: JSON {"listen": [fd...], "peer": fd, "parent": pid}
ENV = "WAKEPROXY_WORKER"
_FIRST_DELAY, _MAX_DELAY, _HEALTHY_AFTER = 0.5, 30.0, 60.0


@dataclass(frozen=True)
class WorkerPlan:
    """What this process of a C{--workers} group listens on, and whether it is the first (the supervisor)."""

    listen_fds: tuple[int, ...]
    peer_fd: int
    first: bool
    settings: object  # the Settings this process runs with (its siblings as peers)
    supervisor: Optional["Supervisor"] = None  # the first process's (it holds the sockets open)
    siblings: tuple[str, ...] = ()  # the first process's: its workers' internal URLs (it relays peers' fences)


def worker_args(argv: list[str]) -> list[str]:
    """C{argv} (wakeproxy's own options) without C{--workers}: what a worker is started with."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--workers":
            skip = True
        elif not arg.startswith("--workers="):
            out.append(arg)
    return out


def worker_plan(settings, argv: list[str], reactor) -> Optional[WorkerPlan]:
    """
    None for a lone wakeproxy. For a worker (C{$WAKEPROXY_WORKER} set): its inherited sockets. For the
    first of C{--workers N}: binds the sockets and returns the plan with a supervisor to start.
    """
    inherited = os.environ.pop(ENV, None)
    if inherited is not None:
        doc = json.loads(inherited)
        _die_with(int(doc["parent"]))
        return WorkerPlan(tuple(doc["listen"]), int(doc["peer"]), False, settings)
    count = settings.peers.workers
    if count <= 1:
        return None
    listen = [_bound(description) for description in settings.proxy.listen]
    internal = [_bound("tcp:0:interface=127.0.0.1") for _ in range(count)]
    ports = [s.getsockname()[1] for s in internal]
    args = worker_args(argv)
    secret, secret_file = settings.peers.secret, None
    if secret is None:
        secret = secrets.token_urlsafe(32)
        fd, secret_file = tempfile.mkstemp(prefix="wakeproxy-workers-")  # 0600
        os.write(fd, secret.encode("ascii"))
        os.close(fd)
        args += ["--peer-secret-file", secret_file]
    urls = ["http://127.0.0.1:{}".format(port) for port in ports]
    supervisor = Supervisor(reactor, args, listen, internal, urls,
                            settings.proxy.drain_timeout + 5, secret_file)
    return WorkerPlan(tuple(s.fileno() for s in listen), internal[0].fileno(), True,
                      _with_siblings(settings, secret, urls[1:]), supervisor, tuple(urls[1:]))


def _with_siblings(settings, secret: str, sibling_urls: list[str]):
    return replace(settings, peers=replace(settings.peers, urls=settings.peers.urls + tuple(sibling_urls),
                                           secret=secret))


def _bound(description: str) -> socket.socket:
    """A listening socket for a C{tcp:}/C{tcp6:} endpoint string (its port, interface= and backlog=)."""
    kind, *parts = description.split(":")
    params = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
    port = int(parts[0].split("=", 1)[-1])
    family = socket.AF_INET6 if kind.lower() == "tcp6" else socket.AF_INET
    interface = params.get("interface", "::" if family == socket.AF_INET6 else "")
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((interface.replace("\\:", ":"), port))
    s.listen(int(params.get("backlog", DEFAULT_BACKLOG)))
    s.setblocking(False)
    return s


def _die_with(parent: int) -> None:
    """Ask Linux for SIGTERM when the first process dies; exit now if it already has."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        sys.exit("wakeproxy worker: the first process ({}) is gone".format(parent))


class AdoptedPort(Service):
    """
    Accepts on a shared listening socket (by fd) for C{factory} once C{ready()} (a Deferred) fires: a
    process that has not yet read the engine leaves new connections to the others. Stops listening when
    stopped.
    """

    def __init__(self, reactor, fd: int, factory, ready=None):
        self._reactor, self._fd, self._factory, self._port = reactor, fd, factory, None
        self._ready = ready

    def startService(self) -> None:
        Service.startService(self)
        if self._ready is None:
            self._adopt()
        else:
            self._ready().addCallback(lambda _: self._adopt() if self.running else None)

    def _adopt(self) -> None:
        probe = socket.socket(fileno=self._fd)
        family = probe.family
        probe.detach()
        self._port = self._reactor.adoptStreamPort(self._fd, family, self._factory)  # a dup: the fd stays ours

    def stopService(self):
        Service.stopService(self)
        if self._port is not None:
            return self._port.stopListening()


def peer_root(peer_resource: Resource, health: Resource) -> Resource:
    """The internal listener's tree: C{/peer} and C{/healthz}, nothing else."""
    root = Resource()
    root.putChild(b"peer", peer_resource)
    root.putChild(b"healthz", health)
    return root


class _Worker(ProcessProtocol):
    def __init__(self, supervisor: "Supervisor", index: int, began: float):
        self.supervisor, self.index, self.began = supervisor, index, began
        self.ended = defer.Deferred()

    def processEnded(self, reason) -> None:
        self.ended.callback(None)
        self.supervisor._ended(self)


class Supervisor(Service):
    """Spawns workers 1..N-1 on the shared sockets, respawns those that exit, stops them all when stopped."""

    def __init__(self, reactor, args: list[str], listen: list[socket.socket], internal: list[socket.socket],
                 urls: list[str], stop_deadline: float, secret_file: Optional[str]):
        self._reactor, self._args, self._listen = reactor, args, listen  # the socket objects hold the fds open
        self._listen_fds = [s.fileno() for s in listen]
        self._internal, self._urls, self._deadline = internal, urls, stop_deadline
        self._secret_file = secret_file
        self._live: dict[int, _Worker] = {}
        self._delay = {i: _FIRST_DELAY for i in range(1, len(internal))}
        self._pending: dict[int, object] = {}

    def startService(self) -> None:
        Service.startService(self)
        for index in range(1, len(self._internal)):
            self._spawn(index)

    def _spawn(self, index: int) -> None:
        self._pending.pop(index, None)
        peers = [arg for i, url in enumerate(self._urls) if i != index for arg in ("--peer", url)]
        peer_fd = self._internal[index].fileno()
        env = dict(os.environ)
        env[ENV] = json.dumps({"listen": self._listen_fds, "peer": peer_fd, "parent": os.getpid()})
        child_fds = {0: "w", 1: 1, 2: 2, peer_fd: peer_fd}
        child_fds.update({fd: fd for fd in self._listen_fds})
        worker = _Worker(self, index, self._reactor.seconds())
        self._live[index] = worker
        transport = self._reactor.spawnProcess(
            worker, sys.executable, [sys.executable, "-m", "twisted", "--log-format=text", "wakeproxy"] + self._args + peers,
            env=env, childFDs=child_fds)
        log.info("worker {index} started (pid {pid})", index=index, pid=transport.pid)

    def _ended(self, worker: _Worker) -> None:
        self._live.pop(worker.index, None)
        if not self.running:
            return
        lived = self._reactor.seconds() - worker.began
        delay = _FIRST_DELAY if lived >= _HEALTHY_AFTER else self._delay[worker.index]
        self._delay[worker.index] = min(delay * 2, _MAX_DELAY)
        log.warn("worker {index} exited after {lived:.1f}s; starting it again in {delay:g}s",
                 index=worker.index, lived=lived, delay=delay)
        self._pending[worker.index] = self._reactor.callLater(delay, self._spawn, worker.index)

    def stopService(self):
        Service.stopService(self)
        for call in self._pending.values():
            call.cancel()
        self._pending.clear()
        workers = list(self._live.values())
        for worker in workers:
            _signal(worker, "TERM")
        kill = self._reactor.callLater(self._deadline, lambda: [_signal(w, "KILL") for w in workers])
        done = defer.gatherResults([w.ended for w in workers])

        def cleanup(_):
            if kill.active():
                kill.cancel()
            if self._secret_file is not None:
                try:
                    os.unlink(self._secret_file)
                except OSError:
                    pass

        return done.addBoth(cleanup)


def _signal(worker: _Worker, name: str) -> None:
    try:
        worker.transport.signalProcess(name)
    except Exception:  # already gone (ProcessExitedAlready)
        pass
