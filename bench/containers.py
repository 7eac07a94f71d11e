"""
The benchmark's mock_app containers (docker SDK): create, start, stop, pause, wait until they answer,
and remove them. Every container is named C{wpbench-<run>-<what>}, uses host networking and carries:

- C{wpbench=1}, C{wpbench.run=<run id>}, C{wpbench.pid=<harness pid>}: what cleanup selects on (a
  container of a run whose harness process is gone is stale and removed by the next run);
- C{wpbench.owner=<run id>-<section>}: the owner label given to that section's wakeproxy
  (C{--owner-label}), so it sees only that section's containers and nothing of other users' (the demo's
  or the test suite's C{wakeproxy.managed=true} containers are never touched, and ours never show up
  in theirs);
- C{wakeproxy.port=<port>} and, when asked, C{wakeproxy.health-check=/status}.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Optional

import docker
import docker.errors

from . import client
from .ports import free_port

__all__ = ["IMAGE", "MockApp", "OWNER_KEY", "create_mock", "create_many", "remove_run", "remove_stale"]

IMAGE = "mock-app:latest"
OWNER_KEY = "wpbench.owner"


def base_labels(run_id: str, owner: str) -> dict[str, str]:
    return {"wpbench": "1", "wpbench.run": run_id, "wpbench.pid": str(os.getpid()), OWNER_KEY: owner}


@dataclass
class MockApp:
    api: docker.APIClient
    id: str
    name: str
    port: int

    def start(self) -> float:
        """docker start; seconds the API call took."""
        t0 = time.perf_counter()
        self.api.start(self.id)
        return time.perf_counter() - t0

    def stop(self) -> None:
        self.api.stop(self.id, timeout=5)

    def pause(self) -> None:
        self.api.pause(self.id)

    def unpause(self) -> float:
        t0 = time.perf_counter()
        self.api.unpause(self.id)
        return time.perf_counter() - t0

    def inspect_state(self) -> dict:
        return self.api.inspect_container(self.id)["State"]

    @property
    def status(self) -> str:
        return self.inspect_state().get("Status", "unknown")

    def health(self) -> str:
        return (self.inspect_state().get("Health") or {}).get("Status") or "none"

    def ensure_stopped(self) -> None:
        state = self.status
        if state == "paused":
            self.api.unpause(self.id)
            state = "running"
        if state in ("running", "restarting"):
            self.stop()

    def ensure_running(self, timeout: float = 30.0) -> None:
        state = self.status
        if state == "paused":
            self.api.unpause(self.id)
        elif state != "running":
            self.start()
        self.wait_answering(timeout)

    def wait_answering(self, timeout: float = 30.0) -> float:
        """Block until C{GET /status} answers 200; the time (perf_counter) it first did."""
        return client.first_ok(self.port, "/status", timeout=timeout)

    def wait_healthy(self, timeout: float = 30.0, interval: float = 0.010) -> float:
        """Block until Docker reports the container healthy; the time (perf_counter) it first did."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.health() == "healthy":
                return time.perf_counter()
            time.sleep(interval)
        raise TimeoutError("{} not healthy after {:g}s".format(self.name, timeout))


def create_mock(api: docker.APIClient, run_id: str, owner: str, what: str, port: Optional[int] = None,
                health_label: Optional[str] = None, docker_health: bool = True,
                env: Optional[dict] = None, command: Optional[list] = None,
                files: Optional[dict] = None, writable: Optional[dict] = None) -> MockApp:
    """
    Create (not start) a mock_app container listening on 127.0.0.1:C{port} (host network, C{IDLE=0}:
    it never stops itself). C{docker_health=False} disables the image's HEALTHCHECK. C{command} replaces
    the image's (C{{port}} in it becomes the port); C{files} maps host paths to paths in the container
    (bind-mounted read-only), e.g. another app to run in the same image; C{writable} the same, read-write.
    """
    port = port or free_port()
    name = "wpbench-{}-{}".format(run_id, what)
    labels = base_labels(run_id, owner)
    labels["wakeproxy.port"] = str(port)
    if health_label:
        labels["wakeproxy.health-check"] = health_label
    environment = {"PORT": str(port), "HOST": "127.0.0.1", "IDLE": "0", "INSTANCE": name}
    environment.update(env or {})
    kwargs = {}
    if not docker_health:
        kwargs["healthcheck"] = {"test": ["NONE"]}
    if command:
        kwargs["command"] = [str(part).replace("{port}", str(port)) for part in command]
    binds = {str(host): {"bind": inside, "mode": "ro"} for host, inside in (files or {}).items()}
    binds.update({str(host): {"bind": inside, "mode": "rw"} for host, inside in (writable or {}).items()})
    cid = api.create_container(IMAGE, name=name, environment=environment, labels=labels,
                               host_config=api.create_host_config(network_mode="host", binds=binds or None),
                               **kwargs)["Id"]
    return MockApp(api, cid, name, port)


def create_many(api: docker.APIClient, run_id: str, owner: str, what: str, count: int,
                first_port: int = 20000, threads: int = 16) -> list[str]:
    """Create C{count} never-started containers (distinct names and port labels) in parallel; their ids."""
    def one(i: int) -> str:
        labels = base_labels(run_id, owner)
        labels["wakeproxy.port"] = str(first_port + i)
        name = "wpbench-{}-{}-{:04d}".format(run_id, what, i)
        return api.create_container(IMAGE, name=name, labels=labels,
                                    environment={"PORT": str(first_port + i), "HOST": "127.0.0.1"},
                                    host_config=api.create_host_config(network_mode="host"))["Id"]

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, range(count)))


def _remove(api: docker.APIClient, ids: list[str], threads: int = 16) -> int:
    def one(cid: str) -> int:
        try:
            api.remove_container(cid, force=True)
            return 1
        except docker.errors.NotFound:
            return 0
        except docker.errors.APIError as e:
            if "already in progress" in str(e):
                return 0
            raise

    if not ids:
        return 0
    with ThreadPoolExecutor(min(threads, len(ids))) as pool:
        return sum(pool.map(one, ids))


def remove_run(api: docker.APIClient, run_id: str, owner: Optional[str] = None) -> int:
    """Remove (force) the containers of this run, or of one section's owner label; how many."""
    label = "{}={}".format(OWNER_KEY, owner) if owner else "wpbench.run={}".format(run_id)
    found = api.containers(all=True, quiet=True, filters={"label": [label, "wpbench.run={}".format(run_id)]})
    return _remove(api, [c["Id"] for c in found])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def remove_stale(api: docker.APIClient, run_id: str) -> int:
    """Remove containers left by earlier runs whose harness process no longer exists."""
    stale = []
    for c in api.containers(all=True, filters={"label": "wpbench=1"}):
        labels = c.get("Labels") or {}
        if labels.get("wpbench.run") == run_id:
            continue
        try:
            pid = int(labels.get("wpbench.pid", "0"))
        except ValueError:
            pid = 0
        if pid <= 0 or pid == os.getpid() or not _alive(pid):
            stale.append(c["Id"])
    return _remove(api, stale)
