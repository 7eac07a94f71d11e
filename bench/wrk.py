"""Running C{wrk} with a Lua C{done} script that prints its summary and latency percentiles as JSON."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Optional

__all__ = ["run_wrk"]

_LUA = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%.0f,"duration_us":%.0f,"bytes":%.0f,"connect":%.0f,"read":%.0f,"write":%.0f,' ..
    '"status":%.0f,"timeout":%.0f,"p50_us":%.0f,"p90_us":%.0f,"p99_us":%.0f,"max_us":%.0f,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
"""


def _script(workdir: Path) -> Path:
    path = Path(workdir) / "wrk-done.lua"
    if not path.exists():
        path.write_text(_LUA)
    return path


def run_wrk(workdir: Path, url: str, connections: int, seconds: float, cookie: Optional[str] = None,
            threads: Optional[int] = None) -> dict:
    """
    C{wrk -c connections -d seconds} against C{url}; a dict with req/s, p50/p90/p99/max in ms and the
    error counts (C{non2xx} is wrk's "status" error: responses that were not 2xx/3xx).

    One wrk thread by default: on the 2-core machines here wrk shares the cores with the proxy and the
    upstream, and a second thread measured the same or less (nginx at c=32: 67k req/s with one thread,
    60k with two; p99 of the direct static upstream 0.35 ms against 4.1 ms).
    """
    threads = threads or 1
    argv = [shutil.which("wrk") or "/usr/bin/wrk", "-t", str(threads), "-c", str(connections),
            "-d", "{}s".format(max(1, int(round(seconds)))), "--timeout", "5s", "-s", str(_script(workdir))]
    if cookie:
        argv += ["-H", "Cookie: instance={}".format(cookie)]
    argv.append(url)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    line = next((l for l in done.stdout.splitlines() if l.startswith("WRKJSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError("wrk failed (status {}): {}{}".format(done.returncode, done.stdout[-500:], done.stderr[-500:]))
    raw = json.loads(line[len("WRKJSON "):])
    seconds_run = raw["duration_us"] / 1e6
    return {
        "connections": connections,
        "threads": threads,
        "requests": int(raw["requests"]),
        "rps": raw["requests"] / seconds_run if seconds_run > 0 else 0.0,
        "p50_ms": raw["p50_us"] / 1000.0,
        "p90_ms": raw["p90_us"] / 1000.0,
        "p99_ms": raw["p99_us"] / 1000.0,
        "max_ms": raw["max_us"] / 1000.0,
        "mean_ms": raw["mean_us"] / 1000.0,
        "errors": {k: int(raw[k]) for k in ("connect", "read", "write", "timeout")},
        "non2xx": int(raw["status"]),
        "transfer_mb_s": raw["bytes"] / seconds_run / 1e6 if seconds_run > 0 else 0.0,
    }
