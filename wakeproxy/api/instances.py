# -*- test-case-name: tests.test_api_unit -*-
"""
What the deploy API does to instances, once a request is authenticated and routed: list and show them,
create one (then start it), start one (optionally waiting until it is ready, through the proxy's waker),
stop one, remove one, and issue an access token for one. Each operation answers its L{Reply}.

Owners: an instance created through the API carries the label C{wakeproxy.owner=<user>} (callers cannot
set it). A user sees and manages only the instances they own; an admin sees and manages every managed
instance, including the operator's own (which have no owner label). Anything else is answered exactly
like a name that does not exist (L{not_found}), so names do not leak.

Engine errors: nothing stays in C{created}. A create that fails is undone by the runtime (its creating
mark, then its sweep of leftovers); a start that fails after the create is undone here: the container is
removed, the removal retried on the clock (L{ROLLBACK_DELAYS}) until it succeeds or the engine is gone.
Other engine errors are answered by L{wakeproxy.api.enginefailures}.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Callable, Optional
from urllib.parse import quote

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from wakeproxy.api.auth import User
from wakeproxy.api.deployspec import CreatePolicy, check_deploy
from wakeproxy.api.enginefailures import ENGINE_RETRY_AFTER, answer_engine_failure, engine_unavailable, engine_why
from wakeproxy.api.jsonbody import BodyError, parse_json
from wakeproxy.api.reply import Reply, crashed, not_found
from wakeproxy.runtime.interface import (
    Container,
    CreateSpec,
    EngineUnavailable,
    IContainerRuntime,
    NameInUse,
    NoSuchImage,
    NoSuchInstance,
    RuntimeFailure,
)
from wakeproxy.waking.waker import WakeFailure

__all__ = ["OWNER", "ROLLBACK_DELAYS", "InstanceOperations", "instance_document", "may_see"]


#: the label naming the deploy API user who created an instance.
OWNER = "wakeproxy.owner"
#: seconds between the attempts to remove a container whose create failed (after a first, immediate one).
ROLLBACK_DELAYS = (1, 2, 4, 8, 16, 32, 64, 128)

_FLAGS = {"": True, "1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


def instance_document(container: Container, activity: Optional[dict] = None) -> dict:
    """
    How the API shows an instance: wakeproxy's keys (its owner: None for the operator's own), then the old
    spawner's (its scripts read them), then what the proxy knows of its activity (in flight, held, last
    activity, idle deadline, last wake).
    """
    labels = dict(container.labels)
    doc = {
        "name": container.name,
        "id": container.id,
        "image": container.image,
        "labels": labels,
        "state": container.state,
        "health": container.health,
        "owner": labels.get(OWNER),
        "ContainerID": container.id,
        "ContainerName": container.name,
        "ContainerLabels": labels,
        "ContainerImage": container.image,
        "status": container.state,
    }
    if activity is not None:
        doc["activity"] = activity
    return doc


def may_see(user: User, container: Optional[Container]) -> bool:
    """May C{user} see and manage C{container}? Admins: every one; others: the ones they own."""
    if container is None:
        return False
    return user.admin or container.labels.get(OWNER) == user.name


class InstanceOperations:
    """The operations of the deploy API on instances; each answers its L{Reply}."""

    log = Logger()

    def __init__(self, runtime: IContainerRuntime, waker, policy: CreatePolicy, stop_timeout: float = 10.0,
                 pull: bool = False, max_body: int = 1024 * 1024,
                 activity: Optional[Callable[[Container], dict]] = None, clock=None, access_keys=None,
                 access_ttl: float = 12 * 3600.0, access_cookie: str = "wakeproxy_access",
                 https: Callable[[object], bool] = lambda request: False,
                 rollback_delays: tuple = ROLLBACK_DELAYS):
        self.activity = activity or (lambda container: None)
        self.runtime = runtime
        self.waker = waker
        self.policy = policy
        self.stop_timeout = stop_timeout
        self.pull = pull
        self.max_body = max_body
        if clock is None:
            from twisted.internet import reactor as clock
        self.clock = clock
        self.access_keys = access_keys
        self.access_ttl = access_ttl
        self.access_cookie = access_cookie
        #: whether a request came over https (the access cookie is then Secure)
        self.https = https
        self.rollback_delays = tuple(rollback_delays)
        #: names being created, or removed after a failed start: another create of them waits.
        self._busy: set[str] = set()

    def visible(self, user: User, name: str) -> Optional[Container]:
        """The managed container C{name} if C{user} may see it, else None."""
        container = self.runtime.get(name)
        return container if may_see(user, container) else None

    def list(self, reply: Reply, user: User) -> None:
        reply.json(200, {"instances": [instance_document(c, self.activity(c)) for c in self.runtime.list()
                                       if may_see(user, c)]})

    def show(self, reply: Reply, user: User, name: str) -> None:
        self._show(reply, name)

    # create

    def create(self, reply: Reply, user: User) -> None:
        raw = reply.body(self.max_body)
        if raw is None:
            return
        try:
            spec = check_deploy(parse_json(raw), self.policy, owner=user.name, lookup=self.runtime.get)
        except BodyError as e:
            reply.problem(e.status, e.detail, errors=[x.as_dict() for x in e.errors])
            return
        if spec.name in self._busy:
            reply.problem(409, "instance {} is being created, or removed after a failed start, right now; try "
                               "again shortly".format(json.dumps(spec.name)), retry_after=ENGINE_RETRY_AFTER)
            return
        if self.runtime.get(spec.name) is not None:
            reply.problem(409, "the name {!r} is already taken by another container".format(spec.name))
            return
        labels = dict(spec.labels)
        labels[OWNER] = user.name
        self._busy.add(spec.name)
        d = Deferred.fromCoroutine(self._create(reply, user, replace(spec, labels=labels)))
        d.addErrback(crashed, reply)

    async def _create(self, reply: Reply, user: User, spec: CreateSpec) -> None:
        name = spec.name
        rolling_back = False
        try:
            try:
                await self._create_container(spec)
            except NameInUse:
                reply.problem(409, "the name {!r} is already taken by another container".format(name))
                return
            except NoSuchImage as e:
                reply.problem(424, "{}: build or pull it first{}".format(
                    e, "" if self.pull else " (wakeproxy runs with --pull never)"))
                return
            except Exception as e:
                # The runtime removes what a failed create may have left (its own mark, then its sweep).
                self._answer_failed_create(reply, name, "could not be created", e, None)
                return
            try:
                await self.runtime.start(name)
            except Exception as e:
                rolling_back = True
                removal = await self._roll_back(name, user, e)
                self._answer_failed_create(reply, name, "was created but could not be started", e, removal)
                return
        finally:
            if not rolling_back:
                self._busy.discard(name)
        self.log.info("deploy API: {user} created {instance} from {image}", user=user.name, instance=name,
                      image=spec.image)
        self._show(reply, name, {b"location": "/deploy/{}".format(quote(name, safe="")).encode("ascii")}, status=201)

    async def _create_container(self, spec: CreateSpec) -> None:
        try:
            await self.runtime.create(spec)
        except NoSuchImage:
            if not self.pull:
                raise
            self.log.info("deploy API: pulling {image} for {instance}", image=spec.image, instance=spec.name)
            await self.runtime.pull(spec.image)
            await self.runtime.create(spec)

    def _answer_failed_create(self, reply: Reply, name: str, what: str, error: Exception,
                              removal: Optional[Exception]) -> None:
        retry_after = engine_unavailable(error)
        if not isinstance(error, RuntimeFailure):
            if retry_after is None:
                raise error  # a bug, not the engine: crashed() answers 500 (after the removal all the same)
            self.log.error("deploy API: the engine failed on {instance} with an error no runtime wrapped: {error!r}",
                           instance=name, error=error)
        if what.startswith("could not"):
            after = "nothing was left behind"
        elif removal is None:
            after = "so it was removed again"
        else:
            after = "and removing it failed too ({}); wakeproxy keeps trying".format(engine_why(removal))
        detail = "instance {} {} ({}), {}".format(name, what, engine_why(error), after)
        if retry_after is not None:
            reply.problem(503, detail, retry_after=retry_after)
        elif what.startswith("could not"):
            reply.problem(502, detail)
        else:
            reply.problem(424, detail)

    def _roll_back(self, name: str, user: User, error: Exception) -> Deferred:
        """
        Remove C{name} after its start failed; fires after the first attempt with None (removed, or nothing
        there) or its error. A failed attempt is retried after each of C{rollback_delays} seconds, in the
        background, until the removal succeeds or the engine is gone (then the runtime's sweep of leftovers
        removes it once the engine is back); the name stays busy meanwhile.
        """
        self.log.warn("deploy API: {instance} could not be started ({why}); removing it", instance=name,
                      why=engine_why(error) if isinstance(error, RuntimeFailure) else repr(error))
        first: Deferred = Deferred()
        done = Deferred.fromCoroutine(self._removal(name, user, first))
        done.addErrback(self._removal_crashed, name, first)
        done.addCallback(lambda _: None if first.called else first.callback(None))
        return first

    def _removal_crashed(self, failure: Failure, name: str, first: Deferred) -> None:
        self.log.failure("deploy API: removing {instance} after a failed start crashed", failure, instance=name)
        if not first.called:
            first.callback(failure.value)

    async def _removal(self, name: str, user: User, first: Deferred) -> None:
        try:
            for attempt, delay in enumerate((0,) + self.rollback_delays):
                if delay:
                    await deferLater(self.clock, delay, lambda: None)
                current = self.runtime.get(name)
                if current is not None and current.labels.get(OWNER) != user.name:
                    self.log.warn("deploy API: not removing {instance}: it is not the one {user} created",
                                  instance=name, user=user.name)
                    return
                try:
                    await self.runtime.remove(name, force=True)
                except NoSuchInstance:
                    return
                except Exception as e:
                    if not first.called:
                        first.callback(e)
                    if isinstance(e, EngineUnavailable) and not e.timed_out:
                        self.log.warn("deploy API: could not remove {instance} after its start failed: the engine "
                                      "is gone ({why}); the sweep of leftovers removes it once it is back",
                                      instance=name, why=engine_why(e))
                        return
                    self.log.warn("deploy API: removing {instance} after its start failed failed (attempt "
                                  "{attempt}): {why}", instance=name, attempt=attempt + 1, why=engine_why(e))
                    continue
                if attempt:
                    self.log.info("deploy API: removed {instance} after {attempts} attempts", instance=name,
                                  attempts=attempt + 1)
                return
            self.log.error("deploy API: gave up removing {instance} after {attempts} attempts; the sweep of "
                           "leftovers removes it", instance=name, attempts=attempt + 1)
        finally:
            self._busy.discard(name)

    # start, stop, delete

    def start(self, reply: Reply, user: User, name: str) -> None:
        wait = reply.query("wait")
        if wait is not None and wait != "ready":
            reply.problem(422, "wait must be 'ready' (PUT /deploy/<name>?wait=ready), not {!r}".format(wait[:64]))
            return
        if wait is not None:
            ready = self.waker.wait_ready(name)
            reply.request.notifyFinish().addErrback(lambda _: ready.cancel())
            ready.addCallbacks(self._ready, self._wake_failed, callbackArgs=(reply, name), errbackArgs=(reply,))
            ready.addErrback(crashed, reply)
            return
        container = self.runtime.get(name)
        d = self.runtime.unpause(name) if container.state == "paused" else self.runtime.start(name)
        d.addCallback(lambda _: self._show(reply, name))
        d.addErrback(answer_engine_failure, reply, name)

    def _ready(self, ticket, reply: Reply, name: str) -> None:
        headers = {}
        if ticket.report is not None:
            headers = {b"server-timing": ticket.report.server_timing(), b"x-wakeproxy-woke": b"1"}
        self._show(reply, name, headers)

    def _wake_failed(self, failure: Failure, reply: Reply) -> None:
        failure.trap(WakeFailure)
        reply.wake_failed(failure.value)

    def stop(self, reply: Reply, user: User, name: str) -> None:
        d = self.waker.halt(name, self.stop_timeout)
        d.addCallback(lambda _: self.log.info("deploy API: {user} stopped {instance}", user=user.name, instance=name))
        d.addCallback(lambda _: self._show(reply, name))
        d.addErrback(answer_engine_failure, reply, name)

    def delete(self, reply: Reply, user: User, name: str) -> None:
        raw = reply.query("force")
        force = False if raw is None else _FLAGS.get(raw.lower())
        if force is None:
            reply.problem(422, "force must be empty, true/false, yes/no or 1/0, not {!r}".format(raw[:64]))
            return
        Deferred.fromCoroutine(self._delete(reply, user, name, force)).addErrback(crashed, reply)

    async def _delete(self, reply: Reply, user: User, name: str, force: bool) -> None:
        before = self.runtime.get(name)
        try:
            if not force:
                await self.waker.halt(name, self.stop_timeout)
                current = self.visible(user, name)
                if current is None or before is None or current.id != before.id:
                    not_found(reply, name)  # removed (and perhaps made again by someone else) meanwhile
                    return
            await self.runtime.remove(name, force=force)
        except Exception:
            answer_engine_failure(Failure(), reply, name)
            return
        self.log.info("deploy API: {user} removed {instance}", user=user.name, instance=name)
        reply.json(200, {"result": "ok", "name": name})

    # access tokens

    def access(self, reply: Reply, user: User, name: str) -> None:
        """C{POST /deploy/<name>/access}: a signed token (and a ready cookie) to use the instance through the proxy."""
        if self.access_keys is None:
            reply.problem(409, "access tokens are off: wakeproxy runs without --access-key, so the proxy does not "
                               "ask for them")
            return
        container = self.runtime.get(name)
        owner = container.labels.get(OWNER, "")
        ttl = int(self.access_ttl)
        expires = int(self.clock.seconds()) + ttl
        token = self.access_keys.issue(name, owner, expires)
        cookie = "{}={}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax".format(self.access_cookie, token, ttl)
        if self.https(reply.request):
            cookie += "; Secure"
        self.log.info("deploy API: {user} got an access token for {instance}, valid {ttl} s", user=user.name,
                      instance=name, ttl=ttl)
        reply.json(200, {"token": token, "cookie": cookie, "expires": expires, "instance": name})

    # answers

    def _show(self, reply: Reply, name: str, headers: Optional[dict] = None, status: int = 200) -> None:
        container = self.runtime.get(name)
        if container is None:
            reply.problem(404, "no managed instance named {} (it was removed meanwhile)".format(json.dumps(name)))
        else:
            reply.json(status, instance_document(container, self.activity(container)), headers)
