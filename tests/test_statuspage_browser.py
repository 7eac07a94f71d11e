"""The operators' status page (GET /ui on the API listener) in headless Chromium, and /metrics."""

import os
import subprocess
import sys
import tempfile

import pytest
import requests
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser import ARTIFACTS, chromium
from tests.test_proxy_docker import _ProxyCase

pytestmark = pytest.mark.docker


def _passwd(directory: str, *users) -> str:
    """A passwd file with C{(user, password, admin)} entries, written by the CLI."""
    path = os.path.join(directory, "passwd.txt")
    for user, password, admin in users:
        subprocess.run([sys.executable, "-m", "wakeproxy.api.passwd", "add", user, "--file", path, "--stdin"]
                       + (["--admin"] if admin else []), input=password + "\n", text=True, check=True,
                       capture_output=True)
    return path


def _cell(driver, name, cls):
    """The text of one cell; the table is redrawn every second, so an element may go stale."""
    try:
        rows = driver.find_elements(By.CSS_SELECTOR, 'tr[data-name="{}"] td.{}'.format(name, cls))
        return rows[0].text if rows else None
    except StaleElementReferenceException:
        return None


def _sign_in(driver, url, user, password):
    driver.get(url + "/ui")
    driver.find_element(By.ID, "ui-username").send_keys(user)
    driver.find_element(By.ID, "ui-password").send_keys(password)
    driver.find_element(By.ID, "ui-signin").click()


class StatusPageTests(_ProxyCase):
    def test_sign_in_see_start_stop(self):
        asleep = self.instances.create()
        awake = self.instances.create()
        passwd = _passwd(tempfile.mkdtemp(prefix="wakeproxy-ui-"), ("ops", "s3cret", True))
        server = self.wakeproxy("--passwd", passwd)
        self.assertEqual(self.get(server, awake).status_code, 200)  # woken through the proxy

        driver = chromium()
        self.addCleanup(driver.quit)
        wait = WebDriverWait(driver, 20, poll_frequency=0.1)
        driver.get(server.api_url + "/ui")
        driver.find_element(By.ID, "ui-username").send_keys("ops")
        driver.find_element(By.ID, "ui-password").send_keys("wrong")
        driver.find_element(By.ID, "ui-signin").click()
        wait.until(lambda d: d.find_element(By.ID, "error").text)
        driver.find_element(By.ID, "ui-password").clear()
        driver.find_element(By.ID, "ui-password").send_keys("s3cret")
        driver.find_element(By.ID, "ui-signin").click()

        def cell(name, cls):
            return _cell(driver, name, cls)

        def click(name, button):
            def attempt(d):
                try:
                    d.find_element(By.CSS_SELECTOR, 'tr[data-name="{}"] button.{}'.format(name, button)).click()
                    return True
                except StaleElementReferenceException:
                    return False
            wait.until(attempt)

        wait.until(lambda d: cell(awake, "state") == "running")
        self.assertEqual(cell(asleep, "state"), "created")
        self.assertIn("woken", cell(awake, "last-wake"))
        self.assertNotEqual(cell(awake, "idle-deadline"), "-")
        os.makedirs(ARTIFACTS, exist_ok=True)
        driver.save_screenshot(os.path.join(ARTIFACTS, "status-page.png"))

        click(asleep, "start")
        wait.until(lambda d: cell(asleep, "state") == "running")
        click(awake, "stop")
        wait.until(lambda d: cell(awake, "state") == "exited")
        self.assertEqual(self.instances.state(awake), "exited")

    def test_a_user_sees_only_their_own(self):
        """Issue 11: the page shows what the signed-in user may see; an admin sees every owner's."""
        hers = self.instances.create(labels={"wakeproxy.owner": "alice"})
        his = self.instances.create(labels={"wakeproxy.owner": "bob"})
        operators = self.instances.create()
        passwd = _passwd(tempfile.mkdtemp(prefix="wakeproxy-ui-"), ("alice", "pw-a", False), ("root", "pw-r", True))
        server = self.wakeproxy("--passwd", passwd)
        driver = chromium()
        self.addCleanup(driver.quit)
        wait = WebDriverWait(driver, 20, poll_frequency=0.1)
        _sign_in(driver, server.api_url, "alice", "pw-a")
        wait.until(lambda d: _cell(d, hers, "state") == "created")
        self.assertEqual(driver.find_element(By.ID, "who").text, "alice")
        self.assertIsNone(_cell(driver, his, "state"))
        self.assertIsNone(_cell(driver, operators, "state"))
        driver.find_element(By.ID, "ui-signout").click()
        _sign_in(driver, server.api_url, "root", "pw-r")
        wait.until(lambda d: _cell(d, operators, "state") == "created")
        self.assertEqual((_cell(driver, hers, "owner"), _cell(driver, his, "owner"), _cell(driver, operators, "owner")),
                         ("alice", "bob", "-"))

    def test_metrics(self):
        name = self.instances.create()
        server = self.wakeproxy("--no-auth")
        self.assertEqual(self.get(server, name).status_code, 200)
        r = requests.get(server.api_url + "/metrics", timeout=10)
        self.assertEqual(r.status_code, 200)
        self.assertTrue(r.headers["content-type"].startswith("text/plain"))
        text = r.text
        self.assertIn('wakeproxy_wakes_total{outcome="woken"} 1.0', text)
        self.assertIn('wakeproxy_wake_phase_seconds_count{phase="total"} 1.0', text)
        self.assertIn("wakeproxy_held_requests 0.0", text)
        self.assertIn("process_cpu_seconds_total ", text)

    def test_metrics_behind_a_token(self):
        passwd = _passwd(tempfile.mkdtemp(prefix="wakeproxy-ui-"), ("prom", "scrape", False))
        server = self.wakeproxy("--passwd", passwd, "--metrics-auth")
        r = requests.get(server.api_url + "/metrics", timeout=10)
        self.assertEqual(r.status_code, 401)
        self.assertIn("Basic", r.headers["www-authenticate"])
        r = requests.get(server.api_url + "/metrics", auth=("prom", "scrape"), timeout=10)
        self.assertEqual(r.status_code, 200)
        self.assertIn("wakeproxy_held_requests 0.0", r.text)
        token = requests.post(server.api_url + "/login", json={"username": "prom", "password": "scrape"},
                              timeout=10).json()["token"]
        r = requests.get(server.api_url + "/metrics", headers={"Authorization": "Bearer " + token}, timeout=10)
        self.assertEqual(r.status_code, 200)

