"""
A Swarm service and its tasks as a snapshot: table tests of L{wakeproxy.runtime.swarmsnapshot} on the
shapes engine 20.10 (API 1.41) answers (recorded from a single-node swarm, trimmed).
"""

from twisted.trial.unittest import SynchronousTestCase

from wakeproxy.runtime.interface import CREATING
from wakeproxy.runtime.swarmsnapshot import replicas_wanted, service_snapshot, settled
from wakeproxy.waking.labels import direct_address

HOST_NET = "i7vov2619xzitupeb5n5g0j79"
CID = "c64f28bd17e5" + "0" * 52


def service(replicas=0, updated=False, labels=None, networks=(HOST_NET,)):
    doc = {"ID": "svc1id", "CreatedAt": "2026-11-29T20:22:52.258087084Z",
           "Spec": {"Name": "svc1", "Labels": dict({"wakeproxy.port": "18777", CREATING: "t0k3n"}, **(labels or {})),
                    "TaskTemplate": {"ContainerSpec": {"Image": "mock-app:latest@sha256:" + "a" * 64},
                                     "Networks": [{"Target": n} for n in networks]},
                    "Mode": {"Replicated": {"Replicas": replicas}}}}
    if updated:
        doc["PreviousSpec"] = dict(doc["Spec"])
    return doc


def task(state, pid=0, exit_code=0, when="2026-11-29T20:22:54Z", service_id="svc1id", attachments=()):
    return {"ServiceID": service_id, "DesiredState": "running",
            "Status": {"Timestamp": when, "State": state,
                       "ContainerStatus": {"ContainerID": CID, "PID": pid, "ExitCode": exit_code}},
            "NetworksAttachments": [{"Network": {"Spec": {"Name": name}}, "Addresses": [address]}
                                    for name, address in attachments]}


def names(target):
    return {HOST_NET: "host"}.get(target, target)


class ServiceSnapshotTests(SynchronousTestCase):
    def test_states(self):
        cases = [
            ("never scaled up", service(), [], "created"),
            ("asked to run, no task yet", service(1, True), [], "restarting"),
            ("asked to run, task pending", service(1, True), [task("pending")], "restarting"),
            ("task starting, container not seen", service(1, True), [task("starting")], "restarting"),
            ("task running", service(1, True), [task("running", pid=42)], "running"),
            ("scaled to 0, tasks reaped", service(0, True), [], "exited"),
            ("scaled to 0, task shut down", service(0, True), [task("shutdown", exit_code=143)], "exited"),
            ("scaled to 0, task still running", service(0, True), [task("running", pid=42)], "running"),
            ("another service's running task", service(1, True), [task("running", pid=7, service_id="x")],
             "restarting"),
        ]
        for what, svc, tasks, state in cases:
            self.assertEqual(service_snapshot(svc, tasks, names).state, state, what)

    def test_starting_task_with_a_started_container_runs_with_health_starting(self):
        svc = service(1, True)
        snapshot = service_snapshot(svc, [task("starting")], names, started=lambda cid: cid == CID)
        self.assertEqual((snapshot.state, snapshot.health), ("running", "starting"))
        self.assertTrue(settled(svc, snapshot))
        healthy = service_snapshot(svc, [task("running", pid=42)], names, health_of={CID: "healthy"}.get)
        self.assertEqual(healthy.health, "healthy")
        self.assertEqual(service_snapshot(svc, [task("running", pid=42)], names).health, "none")

    def test_fields(self):
        snapshot = service_snapshot(service(0, True), [task("shutdown", exit_code=143)], names)
        self.assertEqual((snapshot.id, snapshot.name, snapshot.image), ("svc1id", "svc1", "mock-app:latest"))
        self.assertEqual((snapshot.network_mode, snapshot.exit_code, snapshot.created), ("host", 143, 1795983772))
        self.assertEqual((snapshot.creating, dict(snapshot.labels)), ("t0k3n", {"wakeproxy.port": "18777"}))

    def test_addresses(self):
        host = service_snapshot(service(1, True), [task("running", pid=42, attachments=[("host", "")])], names)
        self.assertEqual(direct_address(host), ("127.0.0.1", 18777))
        overlay = service_snapshot(service(1, True, labels={"wakeproxy.network": "apps"}, networks=("ov1",)),
                                   [task("running", pid=42, attachments=[("apps", "10.0.1.5/24")])], names)
        self.assertEqual((overlay.network_mode, dict(overlay.networks)), ("ov1", {"apps": "10.0.1.5"}))
        self.assertEqual(direct_address(overlay), ("10.0.1.5", 18777))

    def test_settled(self):
        self.assertFalse(settled(service(1, True), service_snapshot(service(1, True), [task("pending")], names)))
        self.assertFalse(settled(service(0, True), service_snapshot(service(0, True), [task("running", 1)], names)))
        self.assertTrue(settled(service(0, True), service_snapshot(service(0, True), [], names)))

    def test_replicas_wanted(self):
        for labels, wanted in [({}, 1), ({"wakeproxy.replicas": "3"}, 3), ({"wakeproxy.replicas": "0"}, 1),
                               ({"wakeproxy.replicas": "-2"}, 1), ({"wakeproxy.replicas": "many"}, 1)]:
            self.assertEqual(replicas_wanted(labels), wanted, labels)
