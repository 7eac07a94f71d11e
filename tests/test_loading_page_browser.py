"""
The optional loading page in headless Chromium: a browser navigation to a sleeping instance gets a page
that waits and reloads (into mock_app's page for browsers), while a curl-like request to the same instance
is held and replayed (and gets the JSON). Its phases and failure state: tests/test_pages_browser.py.
"""

import os
import threading
import time

import pytest
import requests
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser import ARTIFACTS, chromium
from tests.test_proxy_docker import _ProxyCase, _cookie

pytestmark = pytest.mark.docker


class LoadingPageTests(_ProxyCase):
    def test_browser_waits_on_the_page_while_api_client_is_held(self):
        name = self.instances.create(env={"STARTUP_DELAY": "2"})
        server = self.wakeproxy("--loading-page")
        driver = chromium()
        self.addCleanup(driver.quit)
        driver.get(server.proxy_url + "/robots.txt")  # any page on the origin, so a cookie can be set
        driver.add_cookie({"name": "instance", "value": name, "path": "/"})

        held = {}

        def api_client():
            began = time.monotonic()
            r = requests.get(server.proxy_url + "/", headers=dict(_cookie(name), Accept="application/json"),
                             timeout=30)
            held.update(status=r.status_code, body=r.json(), woke=r.headers.get("x-wakeproxy-woke"),
                        took=time.monotonic() - began)

        thread = threading.Thread(target=api_client)
        thread.start()
        time.sleep(0.2)
        driver.get(server.proxy_url + "/")
        self.assertIn("Waking", driver.title)
        WebDriverWait(driver, 20, poll_frequency=0.1).until(lambda d: d.find_elements(By.ID, "hostname"))
        os.makedirs(ARTIFACTS, exist_ok=True)
        driver.save_screenshot(os.path.join(ARTIFACTS, "loading-page-after-wake.png"))
        self.assertEqual(driver.find_element(By.ID, "instance").text, name)  # mock_app's page for a browser
        self.assertTrue(driver.find_element(By.ID, "home").get_attribute("href").endswith("/home"))
        thread.join(30)
        self.assertEqual(held["status"], 200)
        self.assertEqual(held["body"]["instance"], name)
        self.assertGreater(held["took"], 1.5)  # it was held through the app's 2 s start-up, not turned away
        self.assertEqual(self.instances.starts(name), 1)
