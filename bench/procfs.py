"""
Reading a process from /proc: its memory (C{VmRSS}, and a thread sampling its peak), its CPU time, its
children, and the files it holds open under a directory.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Optional, Sequence

__all__ = ["RssSampler", "children", "cpu_seconds", "fd_kinds", "files_under", "open_files_under", "rss"]


def rss(pid: int) -> Optional[int]:
    """Resident set size of C{pid} in bytes (VmRSS), None when it is gone."""
    try:
        with open("/proc/{}/status".format(pid)) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def fd_kinds(pid: int) -> dict[str, int]:
    """C{pid}'s open file descriptors by kind: C{inet} and C{unix} sockets, C{pipe}, C{anon_inode}, C{file}."""
    with open("/proc/net/unix") as f:
        unix = {parts[6] for parts in (line.split() for line in f.readlines()[1:]) if len(parts) > 6}
    kinds: dict[str, int] = {}
    directory = "/proc/{}/fd".format(pid)
    for fd in os.listdir(directory):
        try:
            target = os.readlink(os.path.join(directory, fd))
        except OSError:
            continue
        if target.startswith("socket:["):
            kind = "unix" if target[8:-1] in unix else "inet"
        else:
            kind = target.split(":", 1)[0] if ":" in target and not target.startswith("/") else "file"
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> Optional[float]:
    """utime + stime of C{pid} in seconds, None when it is gone."""
    try:
        with open("/proc/{}/stat".format(pid)) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK
    except (OSError, ValueError, IndexError):
        return None


def children(pid: int) -> list[int]:
    """Direct children of C{pid} (e.g. an nginx master's workers)."""
    found: list[int] = []
    try:
        for task in os.listdir("/proc/{}/task".format(pid)):
            with open("/proc/{}/task/{}/children".format(pid, task)) as f:
                found.extend(int(x) for x in f.read().split())
    except OSError:
        pass
    return found


def open_files_under(pid: int, directory: Path) -> list[str]:
    """
    The files C{pid} holds open under C{directory} (from C{/proc/PID/fd}), deleted ones included: a
    C{tempfile.TemporaryFile} is unlinked at once (or never linked, C{O_TMPFILE}), so only the process's
    descriptors show it.
    """
    prefix = str(directory).rstrip("/") + "/"
    found = []
    try:
        fds = os.listdir("/proc/{}/fd".format(pid))
    except OSError:
        return found
    for fd in fds:
        try:
            target = os.readlink("/proc/{}/fd/{}".format(pid, fd))
        except OSError:
            continue
        if target.startswith(prefix):
            found.append(target)
    return found


def files_under(directory: Path) -> list[str]:
    """Every file below C{directory} (relative paths), for a check that a process left nothing there."""
    root = Path(directory)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir()) if root.exists() else []


class RssSampler:
    """Samples a process's RSS every C{interval} seconds in a thread; C{peak} and C{before} in bytes."""

    def __init__(self, pid: int, interval: float = 0.010, watch_dirs: Sequence[Path] = ()):
        self.pid = pid
        self.interval = interval
        self.before = rss(pid) or 0
        self.peak = self.before
        self.samples = 0
        #: every file the process was seen holding open under one of C{watch_dirs} (every 3rd sample)
        self.watch_dirs = list(watch_dirs)
        self.open_files: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler-{}".format(pid), daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            value = rss(self.pid)
            if value is not None:
                self.samples += 1
                if value > self.peak:
                    self.peak = value
                if self.watch_dirs and self.samples % 3 == 1:
                    for directory in self.watch_dirs:
                        self.open_files.update(open_files_under(self.pid, directory))
            self._stop.wait(self.interval)

    @property
    def growth(self) -> int:
        return self.peak - self.before

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(2.0)
        value = rss(self.pid)
        if value is not None and value > self.peak:
            self.peak = value
