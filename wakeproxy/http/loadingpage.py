# -*- test-case-name: tests.test_pages_browser -*-
"""
The optional browser loading page (C{--loading-page} or label C{wakeproxy.loading-page=true}): served to
an HTML navigation for a sleeping instance while it wakes. It polls the same URL with the header
C{X-Wakeproxy-Status: 1}, which wakeproxy answers itself with a small JSON status (L{status_body}), shows
the wake's phase and the time it has taken so far, reloads once the instance is ready, or says why the
wake failed and offers to try again. Non-HTML requests are still held and replayed.

The page is self-contained (no external resources); the instance name is HTML-escaped, and everything the
status brings is shown as text, never as markup.
"""

from __future__ import annotations

import html
import json
from typing import Optional

__all__ = ["PHASES", "STATUS_HEADER", "page", "status_body"]

STATUS_HEADER = b"x-wakeproxy-status"

#: What the page says for each phase of a wake (the waker's names), and for a stop in progress.
PHASES = {
    "dependencies": "Waking what it depends on",
    "start": "Starting the container",
    "health": "Waiting for the app to be ready",
    "route": "Waiting for the route to it",
    "stopping": "Waiting for it to finish going to sleep",
}

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>Waking {name}…</title>
<style>body{{font:16px system-ui,sans-serif;margin:15vh auto;max-width:34em;padding:0 1em;text-align:center;
color:#222}}.spin{{width:2em;height:2em;margin:1em auto;border:.25em solid #ddd;border-top-color:#36c;
border-radius:50%;animation:s 1s linear infinite}}@keyframes s{{to{{transform:rotate(360deg)}}}}
#elapsed{{font-variant-numeric:tabular-nums;color:#555}}#failed{{border:1px solid #b00;border-radius:.3em;
padding:.5em 1em;text-align:left}}#failed h2{{color:#b00;font-size:1.1em}}button{{font:inherit;padding:.3em 1em}}
</style></head>
<body><h1 id="heading">Waking <span id="name">{name}</span>…</h1>
<div id="waking"><div class="spin" id="spinner"></div>
<p id="phase">Waking up</p><p id="elapsed">0.0 s</p>
<p id="status">This page reloads when it is ready.</p></div>
<div id="failed" role="alert" hidden><h2 id="failed-title">What went wrong</h2><p id="error"></p>
<p id="failed-phase"></p><p><button id="retry" type="button">Try again</button></p></div>
<script>
(function () {{
  var PHASES = {phases};
  var $ = function (id) {{ return document.getElementById(id); }};
  var name = $("name").textContent, began = Date.now(), timer, idle = 0, done = false;
  function tick() {{ $("elapsed").textContent = ((Date.now() - began) / 1000).toFixed(1) + " s"; }}
  function fail(message, phase) {{
    done = true; clearInterval(timer);
    document.title = "Could not wake " + name;
    $("heading").textContent = "Could not wake " + name;
    $("waking").hidden = true; $("failed").hidden = false;
    $("error").textContent = message;
    $("failed-phase").textContent = (phase ? "It failed in the " + phase + " phase" +
        (PHASES[phase] ? " (" + PHASES[phase].toLowerCase() + ")" : "") : "It failed") + " after " +
        ((Date.now() - began) / 1000).toFixed(1) + " s. Trying again wakes it again.";
  }}
  function show(s) {{
    if (typeof s.elapsed === "number") began = Date.now() - s.elapsed * 1000;
    var phase = s.stopping ? "stopping" : s.phase;
    $("phase").textContent = PHASES[phase] || "Waking up";
    $("phase").setAttribute("data-phase", phase || "");
    tick();
  }}
  function poll() {{
    fetch(location.href, {{headers: {{"X-Wakeproxy-Status": "1"}}, cache: "no-store", credentials: "same-origin"}})
      .then(function (r) {{ return r.json().then(function (s) {{ return [r.ok, s]; }}); }})
      .then(function (answer) {{
        var ok = answer[0], s = answer[1] || {{}};
        if (!ok) return fail(s.detail || s.title || "wakeproxy refused to say how it is going.");
        if (s.ready) {{
          done = true; clearInterval(timer);
          $("phase").textContent = "Ready"; $("status").textContent = "Ready: loading it now.";
          location.reload(); return;
        }}
        if (s.error) return fail(s.error, s.phase);
        if (s.waking || s.stopping) idle = 0; else idle += 1;
        if (idle >= 3) return fail(name + " is asleep and is not waking up.");
        show(s);
        setTimeout(poll, 250);
      }})
      .catch(function () {{
        if (done) return;
        $("status").textContent = "Lost contact with the proxy; trying again…";
        setTimeout(poll, 1000);
      }});
  }}
  $("retry").addEventListener("click", function () {{ location.reload(); }});
  timer = setInterval(tick, 100);
  poll();
}})();
</script></body></html>
"""


def page(name: str) -> bytes:
    """The loading page for instance C{name}."""
    return _PAGE.format(name=html.escape(name), phases=_script_json(PHASES)).encode("utf-8")


def status_body(name: str, ready: bool, state: dict) -> bytes:
    """
    The JSON the page polls. C{state} is L{Waker.describe}: C{ready}, C{waking}, C{stopping}; C{phase} and
    C{elapsed} (seconds since the wake began) while waking, when the waker says; and after a failed last
    wake its C{error} and the C{phase} it failed in.
    """
    last = state.get("last_wake") or {}
    waking = bool(state.get("waking", False))
    error = phase = elapsed = None
    if waking:
        phase = _text(state.get("phase"))
        elapsed = _seconds(state.get("waking_for"))
    elif not ready and last.get("outcome") in ("failed", "timeout"):
        error = _text(last.get("detail")) or "the wake failed"
        phase = _text(last.get("phase"))
    return json.dumps({"instance": name, "ready": ready, "waking": waking,
                       "stopping": bool(state.get("stopping", False)), "phase": phase, "elapsed": elapsed,
                       "error": error}).encode("utf-8")


def _text(value) -> Optional[str]:
    return value if isinstance(value, str) and value else None


def _seconds(value) -> Optional[float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return round(float(value), 3)
    return None


def _script_json(value) -> str:
    """JSON safe inside a <script> element."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
