# -*- test-case-name: tests.test_engine_errors -*-
"""
What the Docker SDK raises, as the L{RuntimeFailure} it means: one mapping for every runtime on the Docker
API (containers, Swarm services). Messages are safe to show; the originals go to the log only.
"""

from __future__ import annotations

import http.client
import re
from datetime import datetime
from typing import Any

import docker.errors
import requests.exceptions
import urllib3.exceptions

from wakeproxy.runtime.interface import (
    EngineFailure,
    EngineUnavailable,
    NoSuchImage,
    NoSuchInstance,
    RuntimeFailure,
    WrongState,
)

__all__ = ["TRANSPORT_ERRORS", "created_seconds", "explain", "pinned_by_stale_task", "runtime_failure"]

#: What the transport under the SDK raises: requests, urllib3, http.client and socket errors.
TRANSPORT_ERRORS = (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException,
                     OSError)
#: (urllib3's NewConnectionError, a refused connection, is one of its TimeoutErrors: not for us.)
_TIMEOUTS = (requests.exceptions.Timeout, urllib3.exceptions.TimeoutError, TimeoutError)
#: Podman (4.3) answers two of Docker's 404 and 409 cases with a 500 whose message ends in the cause.
_PODMAN_CAUSES = (("no such container", 404), ("that name is already in use", 409))
#: Docker 20.10's 500s to a start when containerd still holds a task of the container that the engine cannot
#: delete: the first start after an engine restart says "id already in use", every later one "task <id>: already
#: exists"; or the task's bundle directory was left behind ("failed to start shim: mkdir <dir>/<id>: file
#: exists"). docs/RELIABILITY.md, "Engine restarts".
_STALE_TASK = re.compile(r"^(?:task [0-9a-f]{64}: already exists|id already in use"
                         r"|failed to start shim: mkdir \S+/[0-9a-f]{64}: file exists(?:: unknown)?)$")


def api_status(error: docker.errors.APIError) -> int:
    """The status Docker would have answered (Podman's 500s for a missing container or a taken name: 404, 409)."""
    status = error.status_code or 0
    if status == 500:
        explanation = explain(error)
        for cause, meant in _PODMAN_CAUSES:
            if explanation.endswith(cause):
                return meant
    return status


def pinned_by_stale_task(error: BaseException) -> bool:
    """
    Whether C{error} is the engine's answer to a start of a container that a task left in containerd pins:
    a start that an engine restart interrupted (after containerd made the task, before it ran it) leaves a
    task in state "created", which Docker 20.10 tries to delete without killing its process and so never can
    (moby/moby#44399, fixed in 23.0). No start, stop, kill or engine restart frees the container id again.
    """
    return (isinstance(error, docker.errors.APIError) and (error.status_code or 0) == 500
            and _STALE_TASK.match(explain(error).strip()) is not None)


def runtime_failure(error: BaseException) -> RuntimeFailure:
    """
    The L{RuntimeFailure} that an exception out of the Docker SDK means; its message is safe to show
    (the original, with socket paths and addresses, is for the log). Not-found answers are
    L{NoSuchInstance}, conflicts L{WrongState}, the engine's 5xx L{EngineFailure}, transport errors and
    timeouts L{EngineUnavailable}, anything else an L{EngineFailure}.
    """
    if isinstance(error, RuntimeFailure):
        return error
    # APIError is also an OSError and a requests error: look at it first.
    if isinstance(error, docker.errors.ImageNotFound):
        return NoSuchImage(explain(error))
    if isinstance(error, docker.errors.APIError):
        status = api_status(error)
        if status == 404:
            return NoSuchInstance(explain(error))
        if status == 409:
            return WrongState(explain(error))
        if status >= 500 or status == 0:
            # The engine's own explanation may name its paths and addresses: it goes to the log only.
            return EngineFailure("the Docker engine failed ({})".format(status or "no status"))
        return RuntimeFailure(explain(error))
    kind = type(error).__name__
    if isinstance(error, _TIMEOUTS) and not isinstance(error, urllib3.exceptions.NewConnectionError):
        return EngineUnavailable("the Docker engine did not answer in time ({})".format(kind), timed_out=True)
    if isinstance(error, TRANSPORT_ERRORS):
        return EngineUnavailable("the connection to the Docker engine failed ({})".format(kind))
    if isinstance(error, docker.errors.DockerException):
        return EngineFailure("the Docker client failed ({})".format(kind))
    return EngineFailure("the Docker engine call failed unexpectedly ({})".format(kind))


def created_seconds(value: Any) -> int:
    """Unix seconds from a summary's C{Created} (a number) or an inspect's (RFC 3339, nanoseconds); 0 if neither."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, str):
        try:
            return int(datetime.fromisoformat(value).timestamp())
        except ValueError:
            return 0
    return 0


def explain(error: docker.errors.APIError) -> str:
    explanation = getattr(error, "explanation", None)
    if isinstance(explanation, bytes):
        explanation = explanation.decode("utf-8", "replace")
    return str(explanation or error)
