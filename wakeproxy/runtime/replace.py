# -*- test-case-name: tests.test_replace -*-
"""
A copy of a container that the engine can no longer start (L{engineerrors.pinned_by_stale_task}): the create
request that makes the same container again from its inspect output, so that the Docker runtime can put
the copy in its place (same name, configuration, labels, mounts and networks; a new id) and start that.

Pure: the runtime does the calls (L{wakeproxy.runtime.docker.DockerRuntime.start}).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from wakeproxy.runtime.interface import CREATING

__all__ = ["ContainerCopy", "copy_of"]

#: Network modes with no endpoint of the container's own to copy.
_NO_ENDPOINTS = ("host", "none")


@dataclass(frozen=True)
class ContainerCopy:
    #: the body of C{POST /containers/create}: C{Config} fields, C{HostConfig}, C{NetworkingConfig}
    config: dict
    #: (network, endpoint config) pairs to connect after the create (API 1.41 takes one network at create)
    networks: tuple


def copy_of(data: Mapping[str, Any], image: str) -> ContainerCopy:
    """
    The create request for a copy of the container C{data} (C{docker inspect} output) running C{image}
    (the caller passes the image reference while it still names the image the container was made from,
    else that image's id). Named volumes and binds are in C{HostConfig} already; the anonymous volumes the
    container uses are added as binds by name, so that the copy keeps their data (remove the original
    without C{v}). The create mark (L{CREATING}) is left out: a copy that could not be started must not
    look like the leftover of a failed create, which the sweep would remove.
    """
    ident = data["Id"]
    config = dict(data.get("Config") or {})
    config["Image"] = image
    config["Labels"] = {k: v for k, v in (config.get("Labels") or {}).items() if k != CREATING}
    if config.get("Hostname") == ident[:12]:
        del config["Hostname"]  # the engine's default (the id's first 12 digits): the copy gets its own
    host = dict(data.get("HostConfig") or {})
    binds = list(host.get("Binds") or [])
    covered = {_bind_target(b) for b in binds} | {m.get("Target") for m in host.get("Mounts") or []}
    for mount in data.get("Mounts") or []:
        if mount.get("Type") == "volume" and mount.get("Name") and mount.get("Destination") not in covered:
            binds.append("{}:{}{}".format(mount["Name"], mount["Destination"], "" if mount.get("RW", True) else ":ro"))
    host["Binds"] = binds or None
    config["HostConfig"] = host
    mode = host.get("NetworkMode") or "default"
    networks = dict(((data.get("NetworkSettings") or {}).get("Networks") or {}))
    if mode in _NO_ENDPOINTS or mode.startswith("container:") or not networks:
        return ContainerCopy(config, ())
    first = "bridge" if mode == "default" and "bridge" in networks else mode if mode in networks else next(iter(networks))
    config["NetworkingConfig"] = {"EndpointsConfig": {first: _endpoint(networks[first], ident)}}
    rest = tuple((name, _endpoint(endpoint, ident)) for name, endpoint in networks.items() if name != first)
    return ContainerCopy(config, rest)


def _bind_target(bind: str) -> str:
    """The path inside the container of a bind (C{source:target[:options]})."""
    parts = bind.split(":")
    return parts[1] if len(parts) > 1 else parts[0]


def _endpoint(endpoint: Mapping[str, Any], ident: str) -> dict:
    """What the create (or a connect) takes of an inspected endpoint; the engine adds the new short id itself."""
    endpoint = endpoint or {}
    aliases = [a for a in endpoint.get("Aliases") or [] if a != ident[:12]]
    return {"IPAMConfig": endpoint.get("IPAMConfig"), "Links": endpoint.get("Links"), "Aliases": aliases or None}
