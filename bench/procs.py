"""
The processes the benchmark starts (nginx, twistd wakeproxy) and ports for them (reading a process's
memory, CPU and open files from /proc: L{bench.procfs}).

Every process is started in its own session (its process group id is its pid) and recorded in
L{REGISTRY}; L{stop_all} ends exactly those, by pid / process group id, never by name.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Optional, Sequence

from .ports import free_port
from .procfs import children

__all__ = ["NOFILE", "REGISTRY", "Nginx", "Proc", "Wakeproxy", "free_port", "raise_nofile",
           "stop_all", "wait_port", "WakeproxyFailed"]

REPO = Path(__file__).resolve().parents[1]
NOFILE = 65536

#: every process started by this run, in start order
REGISTRY: list["Proc"] = []


def wait_port(port: int, timeout: float = 10.0, proc: Optional["Proc"] = None) -> None:
    """Block until something accepts on 127.0.0.1:port; raise if C{proc} dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive:
            raise RuntimeError("{} exited with status {} before listening on {}; log tail:\n{}".format(
                proc.name, proc.popen.returncode, port, proc.log_tail()))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.01)
    raise TimeoutError("nothing listens on 127.0.0.1:{} after {:g}s".format(port, timeout))


# limits

def raise_nofile(want: int = NOFILE) -> int:
    """Raise this process's RLIMIT_NOFILE towards C{want} (as root the hard limit too); the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for limits in ((want, max(want, hard)), (min(want, hard), hard)):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, limits)
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _child_setup() -> None:
    # runs in the child between fork and exec: the equivalent of `ulimit -n 65536`
    raise_nofile(NOFILE)


# processes

class Proc:
    """One child process with its output in a log file; C{stop} ends it and its process group."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path, cwd: Optional[Path] = None,
                 env: Optional[dict] = None, preexec: Optional[Callable[[], None]] = None):
        self.name = name
        self.argv = list(argv)
        self.log_path = Path(log_path)
        self.cwd = cwd
        self.env = env
        self.preexec = preexec
        self.popen: Optional[subprocess.Popen] = None
        self.started_at: Optional[float] = None
        self._log = None

    def start(self) -> "Proc":
        self._log = open(self.log_path, "ab")
        self.started_at = time.perf_counter()
        self.popen = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self._log,
                                      stderr=subprocess.STDOUT, cwd=self.cwd, env=self.env,
                                      preexec_fn=self.preexec, start_new_session=True)
        REGISTRY.append(self)
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, timeout: float = 5.0) -> Optional[int]:
        """SIGTERM, then SIGKILL to its process group after C{timeout}; returns the exit status."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            try:
                os.kill(self.popen.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self._kill_group()
                self.popen.wait(5)
        self._kill_group()  # leftovers of its group (nginx workers whose master died)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self in REGISTRY:
            REGISTRY.remove(self)
        return self.popen.returncode

    def _kill_group(self) -> None:
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def stop_all() -> None:
    """Stop every process this run started, newest first."""
    for proc in reversed(list(REGISTRY)):
        try:
            proc.stop(timeout=3.0)
        except Exception as e:  # keep cleaning up
            print("cleanup: stopping {} failed: {}".format(proc.name, e), file=sys.stderr)


def nginx_binary() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


class Nginx(Proc):
    """
    An nginx of our own: 1 worker (the proxy: C{$BENCH_NGINX_WORKERS}, to compare with C{--workers N}), its own prefix directory (config, pid, temp paths, error log), no
    access log, started in the foreground. C{ports} maps a server's key to the port it listens on.
    """

    def __init__(self, workdir: Path, name: str, http_body: str, ports: dict[str, int], workers: int = 1):
        prefix = Path(tempfile.mkdtemp(prefix="nginx-{}-".format(name), dir=workdir))
        self.prefix = prefix
        self.ports = ports
        user = "user root;\n" if os.geteuid() == 0 else ""
        conf = (
            "{user}worker_processes {workers:d};\ndaemon off;\nmaster_process on;\npid {p}/nginx.pid;\n"
            "error_log {p}/error.log warn;\n"
            "events {{ worker_connections 8192; }}\n"
            "http {{\n  access_log off;\n  default_type text/plain;\n"
            "  client_body_temp_path {p}/client_body;\n  proxy_temp_path {p}/proxy;\n"
            "  fastcgi_temp_path {p}/fastcgi;\n  uwsgi_temp_path {p}/uwsgi;\n  scgi_temp_path {p}/scgi;\n"
            "  keepalive_requests 1000000;\n"
            "{body}\n}}\n").format(user=user, workers=workers, p=prefix, body=http_body)
        (prefix / "nginx.conf").write_text(conf)
        Proc.__init__(self, "nginx-" + name,
                      [nginx_binary(), "-p", str(prefix), "-e", str(prefix / "error.log"),
                       "-c", str(prefix / "nginx.conf")],
                      prefix / "stdout.log")

    @classmethod
    def static(cls, workdir: Path, name: str = "static") -> "Nginx":
        """The fast static upstream: C{return 200 "ok"} on every path."""
        port = free_port()
        body = "  server {{ listen 127.0.0.1:{} backlog=4096; location / {{ return 200 \"ok\"; }} }}".format(port)
        return cls(workdir, name, body, {"static": port})

    @classmethod
    def proxy(cls, workdir: Path, upstreams: dict[str, int], name: str = "proxy",
              websocket: bool = False) -> "Nginx":
        """
        A reverse proxy: one server per upstream, keep-alive upstream pool, unlimited body size. With
        C{websocket}, the usual Upgrade pass-through (C{Upgrade $http_upgrade}, C{Connection "upgrade"}) and
        an hour of C{proxy_read_timeout}/C{proxy_send_timeout}, so that idle tunnels stay open.
        """
        if websocket:
            headers = ("      proxy_set_header Upgrade $http_upgrade;\n"
                       "      proxy_set_header Connection \"upgrade\";\n"
                       "      proxy_read_timeout 3600s;\n      proxy_send_timeout 3600s;\n")
        else:
            headers = "      proxy_set_header Connection \"\";\n"
        blocks, ports = [], {}
        for key, upstream_port in upstreams.items():
            port = ports[key] = free_port()
            blocks.append(
                "  upstream up_{key} {{ server 127.0.0.1:{up}; keepalive 64; }}\n"
                "  server {{\n    listen 127.0.0.1:{port} backlog=4096;\n    client_max_body_size 0;\n"
                "    location / {{\n      proxy_pass http://up_{key};\n      proxy_http_version 1.1;\n"
                "{headers}    }}\n  }}".format(key=key, up=upstream_port, port=port, headers=headers))
        return cls(workdir, name, "\n".join(blocks), ports, workers=int(os.environ.get("BENCH_NGINX_WORKERS", "1")))

    def start(self, timeout: float = 10.0) -> "Nginx":
        Proc.start(self)
        for port in self.ports.values():
            wait_port(port, timeout, self)
        return self

    @property
    def worker_pid(self) -> Optional[int]:
        workers = children(self.pid)
        return workers[0] if workers else None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join((self.prefix / "error.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return Proc.log_tail(self, lines)


def twistd_binary() -> str:
    here = Path(sys.executable).parent / "twistd"
    return str(here if here.exists() else REPO / ".venv" / "bin" / "twistd")


class WakeproxyFailed(RuntimeError):
    """wakeproxy itself failed (did not start, died, never became ready): a finding, not a harness bug."""


class Wakeproxy(Proc):
    """
    C{twistd -n --pidfile= wakeproxy} on free ports, with C{ulimit -n 65536}. C{owner_label} isolates it:
    it only sees the containers of one benchmark section.
    """

    #: run wakeproxy from this source tree instead of the repository (C{--src}): PYTHONPATH and cwd
    src: Optional[Path] = None
    #: appended to every wakeproxy command line of the run (C{--wakeproxy-arg}, e.g. C{--idle-tunnel open})
    extra_args: Sequence[str] = ()

    def __init__(self, workdir: Path, name: str, owner_label: str, upstream: Optional[str] = None,
                 extra: Sequence[str] = ()):
        self.port = free_port()
        self.api_port = free_port()
        argv = [twistd_binary(), "-n", "--pidfile=", "wakeproxy",
                "--listen", "tcp:{}:interface=127.0.0.1".format(self.port),
                "--api-listen", "tcp:{}:interface=127.0.0.1".format(self.api_port),
                "--owner-label", owner_label]
        if upstream:
            argv += ["--upstream", upstream]
        argv += list(extra) + list(Wakeproxy.extra_args)
        #: its own TMPDIR (empty at start), where a buffered request body would land
        self.tmpdir = Path(tempfile.mkdtemp(prefix="tmp-wakeproxy-{}-".format(name), dir=workdir))
        env = dict(os.environ, TMPDIR=str(self.tmpdir))
        if Wakeproxy.src is not None:
            env["PYTHONPATH"] = os.pathsep.join(
                [str(Wakeproxy.src)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
        Proc.__init__(self, "wakeproxy-" + name, argv, Path(workdir) / "wakeproxy-{}.log".format(name),
                      cwd=Wakeproxy.src or REPO, env=env, preexec=_child_setup)

    def healthz(self) -> tuple[Optional[int], Optional[dict]]:
        """(status, JSON body) of the API's C{GET /healthz}; (None, None) when it does not answer."""
        try:
            with urllib.request.urlopen("http://127.0.0.1:{}/healthz".format(self.api_port), timeout=2) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, None
        except (OSError, ValueError):
            return None, None

    def wait_ready(self, instances: Optional[int] = None, timeout: float = 60.0, interval: float = 0.01) -> float:
        """Poll C{/healthz} until 200 (and C{instances} equal); seconds since the process was spawned."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if not self.alive:
                tail = self.log_tail(30).splitlines() or [""]
                raise WakeproxyFailed("{} exited with status {} while starting: {}".format(
                    self.name, self.popen.returncode, tail[-1].strip()))
            status, body = self.healthz()
            last = (status, body)
            if status == 200 and (instances is None or (body or {}).get("instances") == instances):
                return time.perf_counter() - self.started_at
            time.sleep(interval)
        raise WakeproxyFailed("{}: /healthz not ready after {:g}s (last answer {!r})".format(self.name, timeout, last))

    #: warnings that are expected with the benchmark's configuration (no deploy API users, open access: the
    #: harness names instances directly, as the old spawner's clients did)
    BENIGN = ("no --passwd", "--access open:")

    def problems(self) -> list[str]:
        """
        Lines of its log that report trouble (tracebacks, errors, warnings, failures), without their
        timestamps and without repeats, with how often each occurred.
        """
        marks = ("Traceback", "Unhandled", "#critical]", "#error]", "#warn]", "failed", "Error")
        counts: dict[str, int] = {}
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        for line in text.splitlines():
            if any(m in line for m in marks) and not any(b in line for b in self.BENIGN):
                line = line.strip()
                if line[:4].isdigit() and " [" in line:  # drop the timestamp
                    line = line[line.index(" [") + 1:]
                counts[line] = counts.get(line, 0) + 1
        return [line if n == 1 else "{} (x{})".format(line, n) for line, n in counts.items()]
