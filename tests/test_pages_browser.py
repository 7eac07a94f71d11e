"""
The pages a person reads (issue 15), in headless Chromium, with a screenshot of each state in
test-artifacts/: mock_home signed out and signed in with an instance asleep, mock_app's page for a browser,
wakeproxy's loading page through its phases (a scripted status), while it wakes a real instance and when
the wake fails. The status JSON the loading page polls is checked as a table first (no browser needed).
"""

import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from twisted.trial.unittest import SynchronousTestCase

from tests.browser import ARTIFACTS, chromium
from tests.test_mock_app import start_app
from tests.test_mock_home import FakeDeployApi, start_home
from tests.test_proxy_docker import _ProxyCase
from wakeproxy.http.loadingpage import PHASES, page, status_body

#: Chromium runs with the integration tests (-m docker), as the other browser tests do.
browser = pytest.mark.docker


def _status(name="app", ready=False, **state):
    return json.loads(status_body(name, ready, state))


def _screenshot(driver, filename):
    os.makedirs(ARTIFACTS, exist_ok=True)
    driver.save_screenshot(os.path.join(ARTIFACTS, filename))


def _text(driver, element_id):
    found = driver.find_elements(By.ID, element_id)
    return found[0].text if found else None


class StatusBodyTests(SynchronousTestCase):
    """status_body: what the loading page learns from L{Waker.describe} on each poll."""

    FAILED = {"at": 5.0, "outcome": "failed", "phase": "health",
              "detail": "instance app exited with code 3 while it was starting"}
    CASES = [
        ("ready", dict(ready=True, waking=False, last_wake={"outcome": "woken", "phases": {"start": 0.1}}),
         dict(ready=True, waking=False, stopping=False, phase=None, elapsed=None, error=None)),
        ("waking, the waker telling its phase and time", dict(waking=True, phase="health", waking_for=1.23456),
         dict(ready=False, waking=True, phase="health", elapsed=1.235, error=None)),
        ("waking, the waker telling neither", dict(waking=True, held=1, last_wake=None),
         dict(waking=True, phase=None, elapsed=None, error=None)),
        ("waking again after a failure: no stale error", dict(waking=True, phase="start", last_wake=FAILED),
         dict(waking=True, phase="start", error=None)),
        ("failed", dict(waking=False, last_wake=FAILED),
         dict(waking=False, phase="health", elapsed=None, error=FAILED["detail"])),
        ("timed out", dict(last_wake={"outcome": "timeout", "phase": "route", "detail": "did not become ready"}),
         dict(phase="route", error="did not become ready")),
        ("failed without a detail", dict(last_wake={"outcome": "failed"}),
         dict(phase=None, error="the wake failed")),
        ("ready after a failure", dict(ready=True, last_wake=FAILED), dict(ready=True, error=None, phase=None)),
        ("stopping", dict(stopping=True, held=1), dict(waking=False, stopping=True, error=None)),
        ("asleep, nothing going on", dict(last_wake={"outcome": "woken"}),
         dict(ready=False, waking=False, stopping=False, error=None)),
        ("nonsense from the waker", dict(waking=True, phase=3, waking_for=-1),
         dict(phase=None, elapsed=None)),
        ("no activity known", {}, dict(ready=False, waking=False, stopping=False, error=None)),
    ]

    def test_table(self):
        for label, state, expected in self.CASES:
            state = dict(state)
            got = _status("app", state.pop("ready", False), **state)
            self.assertEqual(got["instance"], "app", label)
            for key, value in expected.items():
                self.assertEqual(got[key], value, "{}: {}".format(label, key))

    def test_page_is_self_contained_and_escaped(self):
        html = page('a<b>&"c"').decode("utf-8")
        self.assertIn("a&lt;b&gt;&amp;&quot;c&quot;", html)
        self.assertNotIn("a<b>", html)
        for external in ("src=", "href=", "<link", "@import", "url("):
            self.assertNotIn(external, html)
        for phase in ("start", "health", "route"):
            self.assertIn(json.dumps(PHASES[phase]), html)
        # the site test waits for '"instance"' (mock_app's page): the loading page must not contain it
        self.assertNotIn('"instance"', html)


# -- mock_home and mock_app in Chromium ------------------------------------------------------------


@browser
class HomePageTests(SynchronousTestCase):
    def test_signed_out_then_an_instance_asleep(self):
        api = FakeDeployApi()
        self.addCleanup(api.stop)
        api.add_instance("u-foo", user="foo", state="exited", health="unhealthy")
        home = start_home(self, api.url)
        driver = chromium()
        self.addCleanup(driver.quit)
        wait = WebDriverWait(driver, 10, poll_frequency=0.1)

        driver.get(home.url + "/home")
        self.assertEqual(driver.title, "Sign in · wakeproxy demo")
        self.assertEqual(_text(driver, "site"), "wakeproxy demo")
        self.assertIn("Sign in", _text(driver, "intro"))
        _screenshot(driver, "pages-home-signed-out.png")

        driver.find_element(By.ID, "username").send_keys("foo")
        driver.find_element(By.ID, "password").send_keys("bar")
        driver.find_element(By.ID, "signin").click()
        wait.until(lambda d: d.find_elements(By.ID, "open"))
        self.assertEqual(driver.title, "Home · wakeproxy demo")
        self.assertEqual(_text(driver, "instance-state"), "asleep")
        state = driver.find_element(By.ID, "instance-state")
        self.assertEqual(state.get_attribute("title"), "Docker: exited, health: unhealthy")
        self.assertEqual(_text(driver, "instance-raw"), "Docker: exited, health: unhealthy")
        self.assertNotIn("unhealthy", driver.find_element(By.ID, "instance").text.split("\n")[0])
        _screenshot(driver, "pages-home-asleep.png")


@browser
class AppPageTests(SynchronousTestCase):
    def test_a_browser_gets_the_page(self):
        app = start_app(self, IDLE="1h", INSTANCE="u-foo", CONNSTR="db for foo")
        driver = chromium()
        self.addCleanup(driver.quit)
        driver.get(app.url + "/")
        self.assertEqual(driver.title, "u-foo · wakeproxy demo")
        self.assertEqual(_text(driver, "instance"), "u-foo")
        self.assertEqual(_text(driver, "connstr"), "db for foo")
        self.assertTrue(_text(driver, "hostname"))
        home = driver.find_element(By.ID, "home")
        self.assertEqual(home.get_attribute("href"), app.url + "/home")
        _screenshot(driver, "pages-app.png")


# -- the loading page ------------------------------------------------------------------------------


class _ScriptedWakeproxy:
    """
    Serves the loading page at /, and answers its polls (C{X-Wakeproxy-Status: 1}) with
    C{self.status}; once C{self.woken} is set, a page load gets a stand-in for the app instead.
    """

    def __init__(self, name):
        self.name = name
        self.status = {"ready": False, "waking": True, "stopping": False, "phase": None, "elapsed": None,
                       "error": None}
        self.status_code = 200
        self.woken = False
        self.page_loads = 0
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format, *args):
                pass

            def do_GET(self):
                if self.path != "/":  # the browser's favicon.ico
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if self.headers.get("X-Wakeproxy-Status") == "1":
                    body = json.dumps(dict(scripted.status, instance=scripted.name)).encode()
                    self.send_response(scripted.status_code)
                    self.send_header("Content-Type", "application/json")
                else:
                    scripted.page_loads += 1
                    body = b"<!doctype html><title>the app</title><p id=app>awake" if scripted.woken else page(
                        scripted.name)
                    self.send_response(200 if scripted.woken else 503)
                    self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = "http://127.0.0.1:{}/".format(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def _elapsed(driver):
    text = _text(driver, "elapsed") or ""
    return float(text.split()[0]) if text.endswith(" s") else None


@browser
class LoadingPageScriptTests(SynchronousTestCase):
    """The page's script against a scripted status: every phase, the elapsed time, failure and retry."""

    def test_phases_failure_and_retry(self):
        name = 'u-<b>"x"'
        scripted = _ScriptedWakeproxy(name)
        self.addCleanup(scripted.stop)
        driver = chromium()
        self.addCleanup(driver.quit)
        wait = WebDriverWait(driver, 10, poll_frequency=0.05)
        driver.get(scripted.url)
        self.assertEqual(driver.title, "Waking {}…".format(name))
        self.assertEqual(_text(driver, "name"), name)

        wait.until(lambda d: _text(d, "phase") == "Waking up")  # the waker does not say: no phase shown
        for phase in ("start", "health", "route"):
            scripted.status.update(phase=phase)
            wait.until(lambda d: d.find_element(By.ID, "phase").get_attribute("data-phase") == phase)
            self.assertEqual(_text(driver, "phase"), PHASES[phase])
            if phase == "health":
                _screenshot(driver, "pages-loading-phase-health.png")
        first = _elapsed(driver)
        time.sleep(0.3)
        self.assertGreater(_elapsed(driver), first)  # live, between polls too
        scripted.status.update(elapsed=42.0)  # the waker's own clock wins
        wait.until(lambda d: 42.0 <= _elapsed(d) < 45.0)
        scripted.status.update(stopping=True, waking=False, phase=None, elapsed=None)
        wait.until(lambda d: _text(d, "phase") == PHASES["stopping"])

        scripted.status.update(stopping=False, phase="health", error="instance u-x exited with code 3")
        wait.until(lambda d: d.find_element(By.ID, "failed").is_displayed())
        self.assertFalse(driver.find_element(By.ID, "spinner").is_displayed())
        self.assertEqual(driver.title, "Could not wake {}".format(name))
        self.assertEqual(_text(driver, "error"), "instance u-x exited with code 3")
        self.assertIn("health phase", _text(driver, "failed-phase"))
        loads = scripted.page_loads
        scripted.status.update(error=None, phase=None, waking=False)  # asleep, nothing going on
        driver.find_element(By.ID, "retry").click()
        wait.until(lambda d: "is not waking up" in (_text(d, "error") or ""))
        self.assertEqual(scripted.page_loads, loads + 1)

        scripted.status_code, scripted.status = 401, {"title": "Unauthorized", "detail": "needs an access token"}
        driver.find_element(By.ID, "retry").click()
        wait.until(lambda d: scripted.page_loads == loads + 2 and _text(d, "error") == "needs an access token")

        scripted.status_code, scripted.status = 200, {"ready": True, "waking": False}
        scripted.woken = True
        driver.find_element(By.ID, "retry").click()
        wait.until(lambda d: d.find_elements(By.ID, "app"))


@browser
class LoadingPageDockerTests(_ProxyCase):
    """The loading page in front of real instances: one that takes a while to wake, one that crashes."""

    def test_waking_then_the_app_page(self):
        name = self.instances.create(env={"STARTUP_DELAY": "2.5"})
        server = self.wakeproxy("--loading-page")
        driver = chromium()
        self.addCleanup(driver.quit)
        wait = WebDriverWait(driver, 20, poll_frequency=0.05)
        driver.get(server.proxy_url + "/robots.txt")  # any page on the origin, so a cookie can be set
        driver.add_cookie({"name": "instance", "value": name, "path": "/"})
        driver.get(server.proxy_url + "/")
        self.assertEqual(driver.title, "Waking {}…".format(name))
        wait.until(lambda d: (_elapsed(d) or 0) >= 1.0)
        self.assertIn(_text(driver, "phase"), set(PHASES.values()) | {"Waking up"})
        self.assertFalse(driver.find_element(By.ID, "failed").is_displayed())
        _screenshot(driver, "pages-loading-waking.png")
        wait.until(lambda d: d.find_elements(By.ID, "hostname"))  # mock_app's page, after the reload
        self.assertEqual(_text(driver, "instance"), name)
        self.assertEqual(self.instances.starts(name), 1)

    def test_failure_and_retry(self):
        name = self.instances.create(env={"CRASH_ON_START": "1"})
        server = self.wakeproxy("--loading-page", "--wake-timeout", "30s")
        driver = chromium()
        self.addCleanup(driver.quit)
        wait = WebDriverWait(driver, 15, poll_frequency=0.05)
        driver.get(server.proxy_url + "/robots.txt")
        driver.add_cookie({"name": "instance", "value": name, "path": "/"})
        driver.get(server.proxy_url + "/")
        wait.until(lambda d: d.find_element(By.ID, "failed").is_displayed())
        self.assertEqual(driver.title, "Could not wake {}".format(name))
        self.assertIn("exited with code 3", _text(driver, "error"))
        self.assertIn("phase", _text(driver, "failed-phase"))
        self.assertTrue(driver.find_element(By.ID, "retry").is_displayed())
        _screenshot(driver, "pages-loading-failed.png")
        driver.find_element(By.ID, "retry").click()  # reloads: wakes it again, and it fails again
        wait.until(lambda d: self.instances.starts(name) == 2)
        wait.until(lambda d: d.find_element(By.ID, "failed").is_displayed())
        self.assertIn("exited with code 3", _text(driver, "error"))
