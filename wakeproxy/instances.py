# -*- test-case-name: tests.test_api_unit -*-
"""
What the deploy API does to instances, once a request is authenticated and routed: list and show them,
create one (then start it, removing it again if the start fails: nothing is left in C{created}), start
one (optionally waiting until it is ready, through the proxy's waker), stop one, remove one. Each
operation answers its L{Reply}.
"""

from __future__ import annotations

from typing import Callable, Optional
from urllib.parse import quote

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from .deployspec import BodyError, CreatePolicy, check_deploy, parse_json
from .reply import Reply
from .runtime import Container, CreateSpec, IContainerRuntime, NameInUse, NoSuchImage, NoSuchInstance, RuntimeFailure
from .waker import WakeFailure

__all__ = ["InstanceOperations", "instance_document"]

log = Logger()

_FLAGS = {"": True, "1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


def instance_document(container: Container, activity: Optional[dict] = None) -> dict:
    """
    How the API shows an instance: wakeproxy's keys, then the old spawner's (its scripts read them), then
    what the proxy knows of its activity (in flight, held, last activity, idle deadline, last wake).
    """
    labels = dict(container.labels)
    doc = {
        "name": container.name,
        "id": container.id,
        "image": container.image,
        "labels": labels,
        "state": container.state,
        "health": container.health,
        "ContainerID": container.id,
        "ContainerName": container.name,
        "ContainerLabels": labels,
        "ContainerImage": container.image,
        "status": container.state,
    }
    if activity is not None:
        doc["activity"] = activity
    return doc


def crashed(failure: Failure, reply: Reply) -> None:
    """The last errback of every chain: a bug, logged with its traceback and answered 500."""
    if failure.check(CancelledError) and reply.gone:
        return
    log.failure("deploy API: {method} {path} failed", failure, method=reply.request.method.decode("latin-1"),
                path=reply.request.path.decode("latin-1")[:200])
    reply.problem(500, "wakeproxy failed unexpectedly; its log says why")


class InstanceOperations:
    log = Logger()

    def __init__(self, runtime: IContainerRuntime, waker, policy: CreatePolicy, stop_timeout: float = 10.0,
                 pull: bool = False, max_body: int = 1024 * 1024,
                 activity: Optional[Callable[[Container], dict]] = None):
        self.activity = activity or (lambda container: None)
        self.runtime = runtime
        self.waker = waker
        self.policy = policy
        self.stop_timeout = stop_timeout
        self.pull = pull
        self.max_body = max_body

    def list(self, reply: Reply, user: str) -> None:
        reply.json(200, {"instances": [instance_document(c, self.activity(c)) for c in self.runtime.list()]})

    def show(self, reply: Reply, user: str, name: str) -> None:
        self._show(reply, name)

    # create

    def create(self, reply: Reply, user: str) -> None:
        raw = reply.body(self.max_body)
        if raw is None:
            return
        try:
            spec = check_deploy(parse_json(raw), self.policy)
        except BodyError as e:
            reply.problem(e.status, e.detail, errors=[x.as_dict() for x in e.errors])
            return
        Deferred.fromCoroutine(self._create(reply, user, spec)).addErrback(crashed, reply)

    async def _create(self, reply: Reply, user: str, spec: CreateSpec) -> None:
        name = spec.name
        try:
            try:
                await self.runtime.create(spec)
            except NoSuchImage:
                if not self.pull:
                    raise
                self.log.info("deploy API: pulling {image} for {instance}", image=spec.image, instance=name)
                await self.runtime.pull(spec.image)
                await self.runtime.create(spec)
        except NameInUse:
            reply.problem(409, "the name {!r} is already taken by another container".format(name))
            return
        except NoSuchImage as e:
            reply.problem(424, "{}: build or pull it first{}".format(
                e, "" if self.pull else " (wakeproxy runs with --pull never)"))
            return
        except RuntimeFailure as e:
            reply.problem(502, "the Docker engine could not create {}: {}".format(name, e))
            return
        try:
            await self.runtime.start(name)
        except RuntimeFailure as e:
            reply.problem(424, await self._roll_back(name, e))
            return
        self.log.info("deploy API: {user} created {instance} from {image}", user=user, instance=name, image=spec.image)
        self._show(reply, name, {b"location": "/deploy/{}".format(quote(name, safe="")).encode("ascii")}, status=201)

    async def _roll_back(self, name: str, error: Exception) -> str:
        self.log.warn("deploy API: {instance} could not be started ({why}); removing it", instance=name, why=str(error))
        try:
            await self.runtime.remove(name, force=True)
        except NoSuchInstance:
            pass
        except RuntimeFailure as e:
            self.log.warn("deploy API: could not remove {instance} after its start failed: {why}", instance=name,
                          why=str(e))
            return "instance {} was created but could not be started ({}); removing it failed too ({})".format(
                name, error, e)
        return "instance {} was created but could not be started ({}), so it was removed again".format(name, error)

    # start, stop, delete

    def start(self, reply: Reply, user: str, name: str) -> None:
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
        d.addErrback(self._failed, reply, name)

    def _ready(self, report, reply: Reply, name: str) -> None:
        headers = {}
        if report is not None:
            headers = {b"server-timing": report.server_timing(), b"x-wakeproxy-woke": b"1"}
        self._show(reply, name, headers)

    def _wake_failed(self, failure: Failure, reply: Reply) -> None:
        failure.trap(WakeFailure)
        error = failure.value
        retry_after = error.retry_after if error.retry_after is not None else (5 if error.status >= 503 else None)
        extra = {"phase": error.phase} if error.phase else {}
        reply.problem(error.status, error.detail, retry_after=retry_after, **extra)

    def stop(self, reply: Reply, user: str, name: str) -> None:
        d = self.waker.halt(name, self.stop_timeout)
        d.addCallback(lambda _: self.log.info("deploy API: {user} stopped {instance}", user=user, instance=name))
        d.addCallback(lambda _: self._show(reply, name))
        d.addErrback(self._failed, reply, name)

    def delete(self, reply: Reply, user: str, name: str) -> None:
        raw = reply.query("force")
        force = False if raw is None else _FLAGS.get(raw.lower())
        if force is None:
            reply.problem(422, "force must be empty, true/false, yes/no or 1/0, not {!r}".format(raw[:64]))
            return
        Deferred.fromCoroutine(self._delete(reply, user, name, force)).addErrback(crashed, reply)

    async def _delete(self, reply: Reply, user: str, name: str, force: bool) -> None:
        try:
            if not force:
                await self.waker.halt(name, self.stop_timeout)
            await self.runtime.remove(name, force=force)
        except RuntimeFailure:
            self._failed(Failure(), reply, name)
            return
        self.log.info("deploy API: {user} removed {instance}", user=user, instance=name)
        reply.json(200, {"result": "ok", "name": name})

    # answers

    def _show(self, reply: Reply, name: str, headers: Optional[dict] = None, status: int = 200) -> None:
        container = self.runtime.get(name)
        if container is None:
            reply.problem(404, "no managed instance named {!r} (it was removed meanwhile)".format(name))
        else:
            reply.json(status, instance_document(container, self.activity(container)), headers)

    def _failed(self, failure: Failure, reply: Reply, name: str) -> None:
        if failure.check(NoSuchInstance):
            reply.problem(404, "no managed instance named {!r}".format(name))
        elif failure.check(RuntimeFailure):
            reply.problem(502, "the Docker engine failed on instance {}: {}".format(name, failure.value))
        else:
            crashed(failure, reply)
