# -*- test-case-name: tests.test_statuspage_browser -*-
"""
C{GET /ui} on the API listener: the status page. A static page (no data in it, so it needs no auth to
fetch); its script signs in through C{POST /login}, keeps the token in sessionStorage, polls C{GET /deploy}
every second and drives start/stop/delete through the same deploy API. It shows what the signed-in user
may see: their own instances, or every managed one for an admin (with each instance's owner).
"""

from __future__ import annotations

__all__ = ["HEADERS", "PAGE"]

PAGE = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>wakeproxy status</title>
<style>
body{font:14px system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;width:100%}th,td{border-bottom:1px solid #ddd;padding:.4em;text-align:left}
.running{color:#080}.exited,.created{color:#777}.paused{color:#a60}.unhealthy{color:#b00}
#error{color:#b00}button{margin-right:.3em}
</style></head>
<body>
<h1>wakeproxy</h1>
<form id="signin-form" hidden>
  <input id="ui-username" autocomplete="username" placeholder="user">
  <input id="ui-password" type="password" autocomplete="current-password" placeholder="password">
  <button id="ui-signin" type="submit">Sign in</button>
</form>
<p id="error"></p>
<div id="board" hidden>
  <p>Signed in as <strong id="who"></strong>: <span id="count"></span> instances; updated <span id="updated"></span>
  <button id="ui-signout">Sign out</button></p>
  <table id="instances"><thead><tr><th>instance</th><th>owner</th><th>state</th><th>health</th><th>in flight</th>
  <th>held</th><th>last activity</th><th>idle stop at</th><th>last wake</th><th></th></tr></thead><tbody></tbody></table>
</div>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem("wakeproxy-token");
function show(signedIn) {
  $("signin-form").hidden = signedIn; $("board").hidden = !signedIn;
  $("who").textContent = sessionStorage.getItem("wakeproxy-user") || "";
}
function when(t) { return t ? new Date(t * 1000).toLocaleTimeString() : "-"; }
async function api(method, path) {
  const r = await fetch(path, {method, headers: {"Authorization": "Bearer " + token}});
  if (r.status === 401) { token = null; sessionStorage.removeItem("wakeproxy-token"); show(false); throw new Error("signed out"); }
  const body = await r.json();
  if (!r.ok) throw new Error(body.detail || r.statusText);
  return body;
}
function cell(row, text, cls) { const td = row.insertCell(); td.textContent = text; if (cls) td.className = cls; return td; }
let shown = "";
function render(instances) {
  const now = JSON.stringify(instances);
  $("count").textContent = instances.length; $("updated").textContent = new Date().toLocaleTimeString();
  if (now === shown) return;  // redraw only on change, so buttons stay put
  shown = now;
  const body = $("instances").tBodies[0];
  body.replaceChildren();
  for (const i of instances) {
    const a = i.activity || {}, w = a.last_wake;
    const row = body.insertRow(); row.dataset.name = i.name;
    cell(row, i.name, "name"); cell(row, i.owner ?? "-", "owner");
    cell(row, i.state, "state " + i.state); cell(row, i.health, "health " + i.health);
    cell(row, a.inflight ?? "-", "inflight"); cell(row, a.held ?? "-", "held");
    cell(row, when(a.last_activity), "last-activity"); cell(row, when(a.idle_deadline), "idle-deadline");
    cell(row, w ? (w.outcome + (w.total !== undefined ? " in " + Math.round(w.total * 1000) + " ms" : "") +
                   " at " + when(w.at)) : "-", "last-wake");
    const actions = row.insertCell();
    for (const [label, method, path] of [["start", "PUT", ""], ["stop", "POST", "/stop"], ["delete", "DELETE", ""]]) {
      const b = document.createElement("button"); b.textContent = label; b.className = label;
      b.onclick = () => { if (label === "delete" && !confirm("Delete " + i.name + "?")) return;
        api(method, "/deploy/" + encodeURIComponent(i.name) + path).then(refresh, (e) => { $("error").textContent = e.message; }); };
      actions.appendChild(b);
    }
  }
}
async function refresh() {
  if (!token) return;
  try { render((await api("GET", "/deploy")).instances); $("error").textContent = ""; }
  catch (e) { if (token) $("error").textContent = e.message; }
}
$("signin-form").onsubmit = async (ev) => {
  ev.preventDefault();
  const r = await fetch("/login", {method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({username: $("ui-username").value, password: $("ui-password").value})});
  const body = await r.json();
  if (!r.ok) { $("error").textContent = body.detail || "sign-in failed"; return; }
  token = body.token; sessionStorage.setItem("wakeproxy-token", token);
  sessionStorage.setItem("wakeproxy-user", $("ui-username").value); shown = "";
  $("error").textContent = ""; show(true); refresh();
};
$("ui-signout").onclick = () => {
  token = null; sessionStorage.removeItem("wakeproxy-token"); sessionStorage.removeItem("wakeproxy-user"); show(false);
};
show(!!token); refresh(); setInterval(refresh, 1000);
</script></body></html>
"""


#: the headers the page is served with: no caching, no framing, scripts and styles from the page only.
HEADERS = (
    (b"content-type", b"text/html; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'"),
)
