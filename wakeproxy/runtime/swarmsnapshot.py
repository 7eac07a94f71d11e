# -*- test-case-name: tests.test_swarm_snapshot -*-
"""
A Swarm service and its tasks as a L{Container} snapshot (pure functions, for L{wakeproxy.runtime.swarm};
the states are described there), and the replicas an awake instance runs.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence

from wakeproxy.runtime.engineerrors import created_seconds
from wakeproxy.runtime.interface import CREATING, Container

__all__ = ["REPLICAS", "replicas", "replicas_wanted", "service_snapshot", "settled"]

#: The label saying how many replicas an awake instance runs (default 1).
REPLICAS = "wakeproxy.replicas"


def replicas_wanted(labels: Mapping[str, str]) -> int:
    """Replicas of an awake instance: its C{wakeproxy.replicas} label when a positive number, else 1."""
    try:
        wanted = int(labels.get(REPLICAS, "1"))
    except ValueError:
        return 1
    return wanted if wanted > 0 else 1


def replicas(service: Mapping[str, Any]) -> int:
    return int((((service.get("Spec") or {}).get("Mode") or {}).get("Replicated") or {}).get("Replicas") or 0)


def _address(cidr: str) -> str:
    return cidr.partition("/")[0]


def _task_runs(task: Mapping[str, Any], started: Callable[[str], bool]) -> bool:
    """
    Whether a task's container runs: the task is C{running}, or C{starting} and its container was seen
    starting (Swarm holds a task whose image has a HEALTHCHECK in C{starting}, without a PID, until the
    check passes: wakeproxy probes it meanwhile, as it does a container).
    """
    status = task.get("Status") or {}
    if status.get("State") == "running":
        return True
    container = status.get("ContainerStatus") or {}
    return status.get("State") == "starting" and (int(container.get("PID") or 0) > 0
                                                  or started(container.get("ContainerID") or ""))


def _health(running: Sequence[Mapping[str, Any]], health_of: Callable[[str], Optional[str]]) -> str:
    """The health of the newest running task: its container's last health event, else what its state says."""
    if not running:
        return "none"
    status = running[-1].get("Status") or {}
    seen = health_of((status.get("ContainerStatus") or {}).get("ContainerID") or "")
    if seen is not None:
        return seen
    return "starting" if status.get("State") == "starting" else "none"


def service_snapshot(service: Mapping[str, Any], tasks: Sequence[Mapping[str, Any]],
                     network_name: Callable[[str], str] = lambda target: target,
                     health_of: Callable[[str], Optional[str]] = lambda container_id: None,
                     started: Callable[[str], bool] = lambda container_id: False) -> Container:
    """
    The snapshot of a service from its inspect and its tasks (other services' tasks are ignored);
    C{network_name} turns a network id of the task template into its name, C{health_of} a task
    container's id into the health its last C{health_status} event said (None: none seen), C{started}
    says whether a task container was seen starting (and not dying since).
    """
    spec = service.get("Spec") or {}
    template = spec.get("TaskTemplate") or {}
    labels = dict(spec.get("Labels") or {})
    creating = labels.pop(CREATING, "")
    tasks = sorted((t for t in tasks if t.get("ServiceID") == service["ID"]),
                   key=lambda t: (t.get("Status") or {}).get("Timestamp") or "")
    running = [t for t in tasks if _task_runs(t, started)]
    if running:
        state = "running"
    elif replicas(service) > 0:
        state = "restarting"
    elif tasks or service.get("PreviousSpec"):
        state = "exited"
    else:
        state = "created"
    targets = [network_name(n.get("Target", "")) for n in (template.get("Networks") or spec.get("Networks") or [])]
    networks: dict[str, str] = {}
    for attachment in (running[-1].get("NetworksAttachments") or []) if running else []:
        name = ((attachment.get("Network") or {}).get("Spec") or {}).get("Name") or ""
        addresses = attachment.get("Addresses") or []
        if name and name != "host":
            networks[name] = _address(addresses[0]) if addresses else ""
    last = ((tasks[-1].get("Status") or {}).get("ContainerStatus") or {}) if tasks else {}
    return Container(
        id=service["ID"],
        name=spec.get("Name", ""),
        image=((template.get("ContainerSpec") or {}).get("Image") or "").partition("@sha256:")[0],
        state=state,
        health=_health(running, health_of),
        labels=labels,
        network_mode="host" if "host" in targets else (targets[0] if len(targets) == 1 else "default"),
        networks=networks,
        exit_code=int(last.get("ExitCode") or 0) if not running else 0,
        created=created_seconds(service.get("CreatedAt")),
        creating=creating,
    )


def settled(service: Mapping[str, Any], snapshot: Container) -> bool:
    """Whether the tasks are where the service wants them (running, or none running at 0 replicas)."""
    return snapshot.running == (replicas(service) > 0)
