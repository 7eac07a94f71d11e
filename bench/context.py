"""
What every section gets: the run's id and scratch directory, the Docker client, the smoke flag, a
place to record wakeproxy problems, and factories for the section's containers and processes (all of
which are cleaned up when the section ends, and again at exit).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import docker

from . import containers
from .containers import OWNER_KEY, MockApp
from .procs import Nginx, Proc, Wakeproxy, stop_all

__all__ = ["Context", "SETTLE"]

#: after changing a container's state behind wakeproxy's back (stop, pause), how long to let its event
#: stream catch up before the next request (events arrive within milliseconds; this is generous).
SETTLE = 0.25


class Context:
    def __init__(self, run_id: str, workdir: Path, docker_client: docker.DockerClient, smoke: bool):
        self.run_id = run_id
        self.workdir = workdir
        self.docker = docker_client
        self.api: docker.APIClient = docker_client.api
        self.smoke = smoke
        self.section: Optional[str] = None
        self.problems: list[dict] = []
        self._procs: list[Proc] = []
        self._wakeproxies: list[Wakeproxy] = []

    # bookkeeping

    def problem(self, text: str) -> None:
        """Record something wakeproxy did wrong (a non-200, an error in its log, a crash)."""
        entry = {"section": self.section, "problem": text}
        if entry not in self.problems:
            self.problems.append(entry)
            print("  ! wakeproxy problem: {}".format(text), flush=True)

    def log(self, text: str) -> None:
        print("  [{}] {}".format(self.section, text), flush=True)

    @property
    def owner(self) -> str:
        """This section's owner-label value."""
        return "{}-{}".format(self.run_id, self.section)

    @property
    def owner_label(self) -> str:
        return "{}={}".format(OWNER_KEY, self.owner)

    # factories

    def mock(self, what: str, **kwargs) -> MockApp:
        return containers.create_mock(self.api, self.run_id, self.owner, "{}-{}".format(self.section, what), **kwargs)

    def wakeproxy(self, name: str, upstream: Optional[str] = None, owner_label: Optional[str] = None,
                  instances: Optional[int] = None, extra=()) -> Wakeproxy:
        """Start a wakeproxy for this section and wait until its API says it listed the containers."""
        wp = Wakeproxy(self.workdir, "{}-{}".format(self.section, name), owner_label or self.owner_label,
                       upstream=upstream, extra=extra)
        wp.start()
        self._procs.append(wp)
        self._wakeproxies.append(wp)
        wp.wait_ready(instances=instances)
        return wp

    def nginx_static(self) -> Nginx:
        n = Nginx.static(self.workdir, "{}-static".format(self.section))
        self._procs.append(n)
        return n.start()

    def nginx_proxy(self, upstreams: dict, websocket: bool = False) -> Nginx:
        n = Nginx.proxy(self.workdir, upstreams, "{}-proxy".format(self.section), websocket=websocket)
        self._procs.append(n)
        return n.start()

    def stop_wakeproxy(self, wp: Wakeproxy) -> None:
        """Stop it, and record as problems a crash, an unexpected exit status or trouble in its log."""
        if wp in self._procs:
            self._procs.remove(wp)
        if wp in self._wakeproxies:
            self._wakeproxies.remove(wp)
        if wp.popen is not None and wp.popen.poll() is not None:
            self.problem("{} exited on its own (status {})".format(wp.name, wp.popen.returncode))
            wp.stop()
        else:
            t0 = time.monotonic()
            status = wp.stop(timeout=5.0)
            took = time.monotonic() - t0
            if status not in (0, -15, 143) or took > 4.0:
                self.problem("{} stopped with status {} after SIGTERM in {:.1f}s".format(wp.name, status, took))
        for line in wp.problems()[:20]:
            self.problem("wakeproxy log: {}".format(line[:400]))

    def end_section(self) -> None:
        """Stop this section's processes (checking wakeproxy's logs) and remove its containers."""
        for proc in reversed(self._procs):
            try:
                if proc in self._wakeproxies:
                    self.stop_wakeproxy(proc)
                else:
                    proc.stop()
            except Exception as e:
                print("cleanup: {}: {}".format(proc.name, e), flush=True)
        self._procs.clear()
        self._wakeproxies.clear()
        containers.remove_run(self.api, self.run_id, self.owner)

    def cleanup(self) -> None:
        """Everything this run started: processes, then containers. Safe to call more than once."""
        stop_all()
        try:
            containers.remove_run(self.api, self.run_id)
        except Exception as e:
            print("cleanup: removing containers failed: {}".format(e), flush=True)
