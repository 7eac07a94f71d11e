"""
Managed mock_app containers for integration tests: create them stopped (as wakeproxy finds them), count
their start events, read their logs, and remove them when the test ends.
"""

import time
from typing import Optional

from tests.support import MOCK_IMAGE, TEST_OWNER, docker_client, free_port, remove_containers, unique_name

__all__ = ["Instances"]


class Instances:
    """Containers one test creates; call C{cleanup} (or register it with addCleanup)."""

    def __init__(self, owner: str = TEST_OWNER):
        self.client = docker_client()
        self.owner_key, _, self.owner_value = owner.partition("=")
        self.names: list[str] = []
        self.ports: dict[str, int] = {}
        self.began = time.time() - 1

    def create(self, name: Optional[str] = None, labels: Optional[dict] = None, env: Optional[dict] = None,
               managed: bool = True, healthcheck: Optional[dict] = None, start: bool = False,
               stop_signal: Optional[str] = None) -> str:
        name = name or unique_name()
        port = free_port()
        all_labels = {"wakeproxy.port": str(port)}
        if managed:
            all_labels[self.owner_key] = self.owner_value
        all_labels.update(labels or {})
        all_env = {"PORT": str(port), "HOST": "127.0.0.1", "IDLE": "0", "INSTANCE": name}
        all_env.update(env or {})
        self.names.append(name)
        self.ports[name] = port
        self.client.create_container(
            MOCK_IMAGE, name=name, labels=all_labels, environment=all_env, healthcheck=healthcheck,
            stop_signal=stop_signal,
            host_config=self.client.create_host_config(network_mode="host"))
        if start:
            self.client.start(name)
        return name

    def starts(self, name: str) -> int:
        """How many times the container was started since this object was made."""
        return len(self.events(name, "start"))

    def events(self, name: str, action: str) -> list:
        """The container's events of one kind since this object was made, oldest first."""
        # (picked here rather than by an "event" filter, which Podman 4.3 gets wrong for "die")
        events = self.client.events(since=int(self.began), until=int(time.time()) + 1, decode=True,
                                    filters={"container": name})
        return [e for e in events if (e.get("Action") or e.get("status")) == action]

    def wait_state(self, name: str, state: str, timeout: float) -> float:
        """Wait until the container is in C{state}; return how long that took (fail after C{timeout})."""
        began = time.monotonic()
        while self.state(name) != state:
            if time.monotonic() - began > timeout:
                raise AssertionError("{} is {}, not {}, after {}s".format(name, self.state(name), state, timeout))
            time.sleep(0.05)
        return time.monotonic() - began

    def state(self, name: str) -> str:
        return self.client.inspect_container(name)["State"]["Status"]

    def logs(self, name: str) -> str:
        return self.client.logs(name).decode("utf-8", "replace")

    def cleanup(self) -> None:
        remove_containers(self.client, *self.names)
        self.client.close()
