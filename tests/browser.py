"""Headless Chromium for page tests (Debian chromium + chromedriver, driven by selenium)."""

import os
import tempfile

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

__all__ = ["ARTIFACTS", "chromium"]

ARTIFACTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "test-artifacts")


def chromium() -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--user-data-dir=" + tempfile.mkdtemp(prefix="wakeproxy-chromium-")):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_page_load_timeout(30)
    return driver
