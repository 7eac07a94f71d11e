# -*- test-case-name: tests.test_deployspec -*-
"""
What the deploy API may create, as pure functions: the old spawner's deploy body turned into a
L{CreateSpec} (read with L{wakeproxy.api.jsonbody}), under the create policy (allowed images, networks, names, and labels that may not claim
another instance's routes nor wakeproxy's ownership).

The deploy body is the seed's C{{"name", "network", "image", "labels", "envs"}}, with lower-case keys
only. C{name} and C{image} are required; C{labels} and C{envs} map strings to strings. Nothing in it can
ask for privileges, bind mounts or capabilities: there are no such keys, and unknown keys are refused.

Every instance created through the API belongs to a tenant, whose labels may not aim wakeproxy (or
Traefik) anywhere else: see L{label_errors} for what they may say. The API calls
C{policy.check(doc, owner=user, lookup=runtime.get)}.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from wakeproxy.waking.labels import (
    DEFAULT_ALLOW_PORTS,
    DEPENDS_ON,
    GROUP,
    HEALTH_CHECK,
    OWNER,
    PORT,
    ROUTER,
    SEED_HEALTH_CHECK,
    Lookup,
    health_check_problem,
    instance_owns,
    owner_of,
    port_problem,
    router_labels,
    router_rule,
    traefik_label_problem,
)
from wakeproxy.api.jsonbody import (
    BodyError,
    FieldError,
    quote,
    raise_errors,
    string_field,
    string_map,
    unknown_keys,
)
from wakeproxy.http.selector import valid_instance_name
from wakeproxy.runtime.interface import CREATING, CreateSpec, OwnerLabel

__all__ = [
    "CreatePolicy",
    "DEFAULT_NAME_PATTERN",
    "DEPLOY_KEYS",
    "check_deploy",
    "label_errors",
    "router_labels",
    "router_rule",
]

DEFAULT_NAME_PATTERN = "^[a-z0-9][a-z0-9-]{0,62}$"
DEPLOY_KEYS = ("name", "network", "image", "labels", "envs", "init")
MAX_IMAGE = 255
MAX_NETWORK = 128
#: Keys (and key prefixes) nobody may set through the API, whatever --owner-label says: wakeproxy's marks.
RESERVED_OWNER_KEYS = ("wakeproxy.managed", OWNER, CREATING)
_GROUP_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")

_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LABEL_KEY_RE = re.compile(r"[^ =\x00-\x1f\x7f]+")
_NETWORK_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
#: Docker refuses a repository named like an image id.
_HEX64_RE = re.compile(r"[a-f0-9]{64}")
# Docker's image reference grammar (github.com/distribution/reference), without IPv6 registries.
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = r"{0}(?:\.{0})*(?::[0-9]+)?".format(_DOMAIN_COMPONENT)
_IMAGE_RE = re.compile(
    r"(?:{domain}/)?{path}(?:/{path})*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{{32,}})?".format(
        domain=_DOMAIN, path=_PATH_COMPONENT))


@dataclass(frozen=True)
class CreatePolicy:
    """What the API may create (the deploy API's settings, and wakeproxy's own ports)."""

    owner: OwnerLabel = OwnerLabel()
    name_pattern: str = DEFAULT_NAME_PATTERN
    #: image globs (fnmatch); empty: any local image.
    allowed_images: Sequence[str] = field(default_factory=tuple)
    allow_host_network: bool = False
    #: inclusive port ranges a tenant's C{wakeproxy.port} may be in (--allow-port).
    allow_ports: Sequence[tuple[int, int]] = DEFAULT_ALLOW_PORTS
    #: wakeproxy's own listening ports: refused with host networking, where 127.0.0.1:<port> is wakeproxy.
    forbidden_ports: frozenset = frozenset()
    #: whether tenants may set a router's C{rule} and C{priority} (--allow-router-rules).
    allow_router_rules: bool = False
    #: whether wakeproxy writes each instance's Traefik router labels itself (--router-labels), with a
    #: rule for C{select} (the --select spec) and C{keep_path}.
    router_labels: bool = False
    select: str = "cookie:instance"
    keep_path: bool = False

    def check(self, doc: Any, owner: Optional[str] = None, lookup: Optional[Lookup] = None) -> CreateSpec:
        """L{check_deploy} under this policy: the spec for C{owner}'s deploy body, or L{BodyError}."""
        return check_deploy(doc, self, owner, lookup)


def check_deploy(doc: Any, policy: CreatePolicy, owner: Optional[str] = None,
                 lookup: Optional[Lookup] = None) -> CreateSpec:
    """
    The L{CreateSpec} a deploy body asks for, or L{BodyError} (422) listing everything wrong with it.

    C{owner}: the user creating it; the spec then carries C{wakeproxy.owner=<owner>}. C{lookup}: the
    runtime's C{get}, to check that C{wakeproxy.depends-on} names only the owner's own instances (without
    it, no dependency can be accepted). With C{policy.router_labels} the spec also carries the
    instance's Traefik router labels, written by wakeproxy.
    """
    errors = unknown_keys(doc, DEPLOY_KEYS)
    if not isinstance(doc, dict):
        raise_errors(errors)
    name = string_field(doc, "name", errors, required=True, limit=128)
    if name is not None:
        if len(name) < 2 or not valid_instance_name(name):
            errors.append(FieldError("name", "{} is not a valid container name ([a-zA-Z0-9][a-zA-Z0-9_.-]+: "
                                             "2 to 128 characters)".format(quote(name))))
        elif re.search(policy.name_pattern, name) is None:
            errors.append(FieldError("name", "{} does not match --name-pattern {}".format(
                quote(name), policy.name_pattern)))
    image = string_field(doc, "image", errors, required=True, limit=MAX_IMAGE)
    if image is not None:
        errors.extend(_image_errors(image, policy))
    network = string_field(doc, "network", errors, required=False, limit=MAX_NETWORK)
    if network is not None:
        if _NETWORK_RE.fullmatch(network) is None:
            errors.append(FieldError("network", "{} is not a network name ([a-zA-Z0-9][a-zA-Z0-9_.-]*)".format(
                quote(network))))
        elif network == "host" and not policy.allow_host_network:
            errors.append(FieldError("network", "network 'host' is refused unless wakeproxy runs with "
                                                "--allow-host-network"))
    labels = string_map(doc, "labels", errors, _LABEL_KEY_RE, "a label key (no space, '=' or control "
                                                              "character)")
    envs = string_map(doc, "envs", errors, _ENV_NAME_RE, "an environment variable name "
                                                          "([A-Za-z_][A-Za-z0-9_]*)")
    if labels is not None and name is not None:
        errors.extend(label_errors(labels, name, policy, network, owner, lookup))
    init = doc.get("init", True)
    if not isinstance(init, bool):
        errors.append(FieldError("init", "must be true or false (Docker's init process as PID 1; default true)"))
    raise_errors(errors)
    labels = dict(labels or {})
    if policy.router_labels:
        try:
            written = router_labels(name, policy.select, policy.keep_path, labels.get(PORT))
        except ValueError as e:
            raise BodyError(422, str(e), [FieldError("labels", str(e))])
        written.update(labels)  # what the tenant may set itself wins
        labels = written
    if owner is not None:
        labels[OWNER] = owner
    return CreateSpec(name=name, image=image, labels=labels, env=envs or {}, network=network, init=init)


def label_errors(labels: dict[str, str], name: str, policy: CreatePolicy, network: Optional[str] = None,
                 owner: Optional[str] = None, lookup: Optional[Lookup] = None) -> list[FieldError]:
    """
    Labels a tenant may not set on instance C{name} (on C{network}, for C{owner}), each a L{FieldError}:

     - wakeproxy's marks: the owner label (or any key like it), C{wakeproxy.owner}, C{wakeproxy.creating};
     - C{wakeproxy.port} that is not a port, is outside C{policy.allow_ports}, or, with host networking,
       is one of wakeproxy's own listening ports; C{wakeproxy.router} that is not the instance's own;
     - C{wakeproxy.health-check} (and the seed's C{health-check}) that is not a path: it is probed on the
       instance's own address, never a URL;
     - C{wakeproxy.depends-on} naming anything but C{owner}'s own existing instances (missing and
       someone else's are refused alike), or the instance itself; C{wakeproxy.group} that is not a plain
       name (groups are per owner, see L{wakeproxy.waking.labels.group});
     - C{traefik.*} keys, parsed strictly (see L{wakeproxy.waking.labels.traefik_label_problem}).
    """
    errors = []
    reserved = {policy.owner.key.casefold()} | set(RESERVED_OWNER_KEYS)
    for key, value in labels.items():
        where = "labels.{}".format(key)
        folded = key.casefold()
        if folded in reserved or any(folded.startswith(k) for k in RESERVED_OWNER_KEYS):
            errors.append(FieldError(where, "{} marks the containers wakeproxy owns; wakeproxy sets it "
                                            "itself".format(quote(key))))
        elif key.split(".", 1)[0].casefold() == "traefik":
            problem = traefik_label_problem(key, value, name, policy.allow_router_rules, policy.router_labels)
            if problem is not None:
                errors.append(FieldError(where, problem))
        elif key == ROUTER and not instance_owns(value, name):
            errors.append(FieldError(where, "instance {} may only name its own router ({!r} or starting with "
                                            "{!r}), not {}".format(name, name, name + "-", quote(value))))
        elif key == PORT:
            if not (value.isdigit() and value.isascii() and 0 < int(value) < 65536):
                errors.append(FieldError(where, "{} must be a port number (1-65535), not {}".format(
                    PORT, quote(value))))
            else:
                problem = port_problem(int(value), network == "host", policy.allow_ports, policy.forbidden_ports)
                if problem is not None:
                    errors.append(FieldError(where, "{}: {} (--allow-port)".format(PORT, problem)))
        elif key in (HEALTH_CHECK, SEED_HEALTH_CHECK):
            problem = health_check_problem(value)
            if problem is not None:
                errors.append(FieldError(where, "{} {}, not {}".format(key, problem, quote(value))))
        elif key == DEPENDS_ON:
            errors.extend(FieldError(where, e) for e in _dependency_errors(value, name, owner, lookup))
        elif key == GROUP and _GROUP_RE.fullmatch(value) is None:
            errors.append(FieldError(where, "{} must be a group name ([A-Za-z0-9][A-Za-z0-9_.-]*, at most 128), "
                                            "not {}".format(GROUP, quote(value))))
    return errors


def _dependency_errors(value: str, name: str, owner: Optional[str], lookup: Optional[Lookup]) -> list[str]:
    names = [n.strip() for n in value.split(",")]
    if not all(names):
        return ["{} is a comma-separated list of instance names, without empty entries".format(DEPENDS_ON)]
    errors = []
    for other_name in names:
        if other_name == name:
            errors.append("instance {} may not depend on itself".format(name))
            continue
        other = lookup(other_name) if lookup is not None and valid_instance_name(other_name) else None
        if other is None or owner_of(other) != owner:
            # Missing and someone else's are answered alike: the answer tells no one which names exist.
            errors.append("{} is not one of your instances: an instance may only depend on instances of the same "
                          "owner, created before it".format(quote(other_name)))
    return errors


def _image_errors(image: str, policy: CreatePolicy) -> list[FieldError]:
    if _IMAGE_RE.fullmatch(image) is None or _HEX64_RE.fullmatch(image.split(":", 1)[0]):
        return [FieldError("image", "{} is not an image reference like 'name:tag' (lower-case name)".format(
            quote(image)))]
    if policy.allowed_images:
        candidates = [image]
        if "@" not in image and ":" not in image.rsplit("/", 1)[-1]:
            candidates.append(image + ":latest")
        if not any(fnmatch.fnmatchcase(c, glob) for c in candidates for glob in policy.allowed_images):
            return [FieldError("image", "image {} is not allowed here (--allow-image {})".format(
                quote(image), " ".join(policy.allowed_images)))]
    return []


