# -*- test-case-name: tests.test_proxy_docker -*-
"""
The optional browser loading page (C{--loading-page} or label C{wakeproxy.loading-page=true}): served to
an HTML navigation for a sleeping instance while it wakes. It polls the same URL with the header
C{X-Wakeproxy-Status: 1}, which wakeproxy answers itself with a small JSON status, and reloads once the
instance is ready, or shows why the wake failed. Non-HTML requests are still held and replayed.
"""

from __future__ import annotations

import html
import json

__all__ = ["STATUS_HEADER", "page", "status_body"]

STATUS_HEADER = b"x-wakeproxy-status"

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>Waking {name}…</title>
<style>body{{font:16px system-ui,sans-serif;margin:15vh auto;max-width:34em;text-align:center;color:#222}}
.spin{{width:2em;height:2em;margin:1em auto;border:.25em solid #ddd;border-top-color:#36c;border-radius:50%;
animation:s 1s linear infinite}}@keyframes s{{to{{transform:rotate(360deg)}}}}#error{{color:#b00}}</style></head>
<body><h1>Waking <span id="name">{name}</span>…</h1><div class="spin" id="spinner"></div>
<p id="status">Starting your instance; this page reloads when it is ready.</p><p id="error"></p>
<script>
(function poll() {{
  fetch(location.href, {{headers: {{"X-Wakeproxy-Status": "1"}}, cache: "no-store", credentials: "same-origin"}})
    .then(function (r) {{ return r.json(); }})
    .then(function (s) {{
      if (s.ready) {{ document.getElementById("status").textContent = "Ready."; location.reload(); return; }}
      if (s.error) {{
        document.getElementById("spinner").style.display = "none";
        document.getElementById("error").textContent = s.error;
        return;
      }}
      setTimeout(poll, 250);
    }})
    .catch(function () {{ setTimeout(poll, 1000); }});
}})();
</script></body></html>
"""


def page(name: str) -> bytes:
    return _PAGE.format(name=html.escape(name)).encode("utf-8")


def status_body(name: str, ready: bool, state: dict) -> bytes:
    """The JSON the page polls: ready, waking, and the error of a failed last wake."""
    last = state.get("last_wake") or {}
    error = None
    if not ready and not state.get("waking") and last.get("outcome") in ("failed", "timeout"):
        error = last.get("detail")
    return json.dumps({"instance": name, "ready": ready, "waking": state.get("waking", False),
                       "error": error}).encode("utf-8")
