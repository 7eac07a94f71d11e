"""
A private Docker engine for tests that stop, kill or restart one: its own socket, data root, exec root,
pidfile and log under a temp directory, started and removed by the test. The machine's engine and its
containers are never touched (ENVIRONMENT.md, "A private engine for tests").
"""

import os
import shutil
import signal
import subprocess
import tempfile
import time

import docker

__all__ = ["PrivateDockerd"]

_FLAGS = ["--bridge=none", "--iptables=false", "--ip6tables=false", "--ip-masq=false"]


class PrivateDockerd:
    """dockerd; a subclass may run another engine with a Docker-compatible API (tests/privatepodman.py)."""

    #: the file, in C{dir}, that the engine's output goes to
    log_name = "dockerd.log"
    #: how the temp directory's name starts (short: the socket path has a length limit)
    prefix = "wpd-"

    def __init__(self, *flags: str):
        """C{flags}: more dockerd options, e.g. C{--live-restore} (containers keep running through a restart)."""
        self.flags = list(flags)
        self.dir = tempfile.mkdtemp(prefix=self.prefix, dir="/tmp")
        self.url = "unix://{}/docker.sock".format(self.dir)
        self.process = None

    def command(self) -> list:
        """The engine's command line."""
        return (["dockerd", "--host", self.url, "--data-root", os.path.join(self.dir, "data"),
                 "--exec-root", os.path.join(self.dir, "exec"), "--pidfile", os.path.join(self.dir, "docker.pid")]
                + _FLAGS + self.flags)

    def environ(self) -> dict:
        """The engine's environment."""
        return dict(os.environ)

    def start(self, timeout: float = 30) -> "PrivateDockerd":
        log = open(os.path.join(self.dir, self.log_name), "ab")
        self.process = subprocess.Popen(self.command(), env=self.environ(), stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            try:
                client = docker.APIClient(base_url=self.url, version="auto", timeout=5)
                client.ping()
                client.close()
                return self
            except Exception:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the private engine ({}) did not start: {}".format(
                        self.command()[0], self.log()[-2000:]))
                time.sleep(0.1)

    def stop(self, timeout: float = 30) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def load_image(self, image: str) -> None:
        """Copy C{image} from the machine's engine (docker save | docker load)."""
        save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
        subprocess.check_call(["docker", "-H", self.url, "load", "-q"], stdin=save.stdout,
                              stdout=subprocess.DEVNULL)
        if save.wait() != 0:
            raise RuntimeError("docker save {} failed".format(image))

    def _stop_containerd(self, timeout: float = 10) -> None:
        """
        The engine's own containerd (its child, started with it) outlives a C{--live-restore} engine's
        stop on purpose, so that a restarted engine finds its containers: end it by its pidfile.
        """
        try:
            with open(os.path.join(self.dir, "exec", "containerd", "containerd.pid")) as f:
                pid = int(f.read().strip())
            with open("/proc/{}/cmdline".format(pid), "rb") as f:
                if self.dir.encode() not in f.read():
                    return  # not ours (the pid was reused): never signal another process
            os.kill(pid, signal.SIGTERM)
        except (OSError, ValueError):
            return
        deadline = time.monotonic() + timeout
        while os.path.exists("/proc/{}".format(pid)) and time.monotonic() < deadline:
            time.sleep(0.05)

    def _kill_orphan_shims(self) -> None:
        """
        The shims of tasks the engine could not delete (a start its stop interrupted, moby/moby#44399) outlive
        it and its containerd: end those of this engine (their command line names its directory), and so
        their processes.
        """
        mine = self.dir.encode() + b"/"
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open("/proc/{}/cmdline".format(entry), "rb") as f:
                    cmdline = f.read()
                if b"containerd-shim" in cmdline and mine in cmdline:
                    os.kill(int(entry), signal.SIGKILL)
            except OSError:
                continue

    def log(self) -> str:
        try:
            with open(os.path.join(self.dir, self.log_name), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def remove(self) -> None:
        """Stop the engine (its containers die with it) and delete everything it wrote."""
        try:
            client = docker.APIClient(base_url=self.url, version="auto", timeout=10)
            for container in client.containers(all=True):
                client.remove_container(container["Id"], force=True)
            client.close()
        except Exception:
            pass
        self.stop()
        self._stop_containerd()
        self._kill_orphan_shims()
        # what the engine leaves mounted under its directories (the default network namespace, overlays)
        with open("/proc/self/mounts") as f:
            mounts = [line.split()[1] for line in f if line.split()[1].startswith(self.dir + "/")]
        for mount in sorted(mounts, key=len, reverse=True):
            subprocess.call(["umount", "-l", mount], stderr=subprocess.DEVNULL)
        shutil.rmtree(self.dir, ignore_errors=True)
