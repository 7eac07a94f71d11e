"""
The whole site as operators run it: the images `make images` builds, the compose file, the example
scripts against a live wakeproxy, and mock_home end to end in headless Chromium through wakeproxy to a
woken mock_app.
"""

import os
import subprocess
import sys
import tempfile
import time

import pytest
import requests
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser import ARTIFACTS, chromium
from tests.support import free_port, remove_containers, unique_name
from tests.test_proxy_docker import _ProxyCase

pytestmark = pytest.mark.docker

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _passwd(directory: str, user: str, password: str) -> str:
    path = os.path.join(directory, "passwd.txt")
    subprocess.run([sys.executable, "-m", "wakeproxy.api.passwd", "add", user, "--file", path, "--stdin"],
                   input=password + "\n", text=True, check=True, capture_output=True)
    return path


class ImagesAndComposeTests(_ProxyCase):
    def test_compose_file_is_valid(self):
        result = subprocess.run(["docker-compose", "-f", os.path.join(ROOT, "docker-compose.yml"), "config"],
                                capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 0, result.stderr)
        for service in ("traefik:", "wakeproxy:", "mock-home:", "traefiknet"):
            self.assertIn(service, result.stdout)
        self.assertIn("traefik:v3", result.stdout)

    def test_images_are_built_from_the_local_base(self):
        client = self.instances.client
        base = client.inspect_image("wakeproxy-base:bookworm")["Id"]
        for image in ("mock-app:latest", "mock-home:latest", "wakeproxy:latest"):
            history = [layer["Id"] for layer in client.history(image)]
            self.assertIn(base, history, image)

    def test_wakeproxy_image_runs(self):
        client = self.instances.client
        name = unique_name("wpt-image")
        proxy_port, api_port = free_port(), free_port()
        client.create_container(
            "wakeproxy:latest", name=name,
            command=["--listen", "tcp:{}:interface=127.0.0.1".format(proxy_port),
                     "--api-listen", "tcp:{}:interface=127.0.0.1".format(api_port)],
            host_config=client.create_host_config(network_mode="host", binds=[
                "/var/run/docker.sock:/var/run/docker.sock"]))
        self.addCleanup(remove_containers, client, name)
        client.start(name)
        deadline = time.monotonic() + 20
        while True:
            try:
                r = requests.get("http://127.0.0.1:{}/healthz".format(api_port), timeout=2)
                if r.status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            self.assertLess(time.monotonic(), deadline, client.logs(name).decode()[-2000:])
            time.sleep(0.2)
        client.stop(name, timeout=5)
        # twistd re-raises SIGTERM; as PID 1 (no default action) that ends in a clean exit
        self.assertIn(client.inspect_container(name)["State"]["ExitCode"], (0, 143))
        self.assertNotIn(b"Traceback", client.logs(name))


class ExampleScriptTests(_ProxyCase):
    def test_examples_create_test_list_delete(self):
        directory = tempfile.mkdtemp(prefix="wakeproxy-examples-")
        passwd = _passwd(directory, "foo", "bar")
        server = self.wakeproxy("--passwd", passwd, "--allow-host-network", "--allow-image", "mock-app:*")
        prefix = unique_name("ex")
        first = free_port()  # minion-i listens on BASE_PORT+i: two free ports in a row are likely enough here
        env = dict(os.environ, API=server.api_url, PROXY=server.proxy_url, N="2", PREFIX=prefix,
                   BASE_PORT=str(first - 1))
        names = ["{}-{}".format(prefix, i) for i in (1, 2)]
        self.addCleanup(remove_containers, self.instances.client, *names)
        outputs = {}
        for script in ("create-instances.sh", "list-instances.sh", "test-instances.sh", "delete-instances.sh"):
            result = subprocess.run(["bash", os.path.join(ROOT, "examples", script)], env=env, capture_output=True,
                                    text=True, timeout=120)
            self.assertEqual(result.returncode, 0, "{}:\n{}\n{}".format(script, result.stdout, result.stderr))
            outputs[script] = result.stdout
        for name in names:
            self.assertIn("created " + name, outputs["create-instances.sh"])
            self.assertIn(name, outputs["list-instances.sh"])
            self.assertIn(name + " answered", outputs["test-instances.sh"])
            self.assertIn("deleted " + name, outputs["delete-instances.sh"])
        self.assertEqual(self.instances.client.containers(all=True, filters={"name": prefix}), [])


class HomeSiteBrowserTests(_ProxyCase):
    def test_sign_in_create_open_in_chromium(self):
        directory = tempfile.mkdtemp(prefix="wakeproxy-home-")
        user = unique_name("u").replace("-", "")[:12]
        passwd = _passwd(directory, user, "pw-" + user)
        home_port = free_port()
        server = self.wakeproxy("--passwd", passwd, "--allow-host-network", "--allow-image", "mock-app:*",
                                "--home-upstream", "http://127.0.0.1:{}".format(home_port))
        home = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "mock_home", "app.py")],
            env=dict(os.environ, PORT=str(home_port), HOST="127.0.0.1", API_URL=server.api_url,
                     INSTANCE_NETWORK="host"),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(home.wait, 10)
        self.addCleanup(home.terminate)
        instance = "u-" + user
        self.addCleanup(remove_containers, self.instances.client, instance)
        deadline = time.monotonic() + 10
        while True:
            try:
                if requests.get(server.proxy_url + "/home/healthz", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            self.assertLess(time.monotonic(), deadline, "mock_home did not come up behind wakeproxy")
            time.sleep(0.1)

        driver = chromium()
        self.addCleanup(driver.quit)
        wait = WebDriverWait(driver, 30, poll_frequency=0.1)
        driver.get(server.proxy_url + "/")  # no instance yet: a browser is sent home
        wait.until(lambda d: d.find_elements(By.ID, "signin"))
        self.assertTrue(driver.current_url.endswith("/home"))
        driver.find_element(By.ID, "username").send_keys(user)
        driver.find_element(By.ID, "password").send_keys("wrong")
        driver.find_element(By.ID, "signin").click()
        wait.until(lambda d: d.find_elements(By.ID, "error"))
        driver.find_element(By.ID, "username").clear()
        driver.find_element(By.ID, "username").send_keys(user)
        driver.find_element(By.ID, "password").send_keys("pw-" + user)
        driver.find_element(By.ID, "signin").click()
        wait.until(lambda d: d.find_elements(By.ID, "create"))
        driver.find_element(By.ID, "create").click()
        wait.until(lambda d: d.find_elements(By.ID, "open"))
        self.assertEqual(driver.find_element(By.ID, "instance-name").text, instance)
        # stop it, so that opening it must wake it through wakeproxy
        self.instances.client.stop(instance, timeout=5)
        time.sleep(0.3)
        driver.find_element(By.ID, "open").click()
        wait.until(lambda d: '"instance"' in d.page_source)
        os.makedirs(ARTIFACTS, exist_ok=True)
        driver.save_screenshot(os.path.join(ARTIFACTS, "home-open-instance.png"))
        self.assertIn(instance, driver.page_source)
        cookie = driver.get_cookie("instance")
        self.assertEqual((cookie["value"], cookie["httpOnly"], cookie.get("sameSite")), (instance, True, "Lax"))
