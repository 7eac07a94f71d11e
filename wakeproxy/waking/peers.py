# -*- test-case-name: tests.test_peers -*-
"""
Replicas that act as one: before this replica stops an idle instance, every peer (C{--peer URL}, its
deploy API listener) fences it and reports its activity; the instance is stopped only if every peer
says idle, then the fences are released.

The protocol (each call authenticated with C{Authorization: Bearer <--peer-secret-file>}):

    POST <peer>/peer/fence/<name>    {"token": T, "seconds": S}  -> 200 {"fenced", "inflight", "held",
                                                                         "idle_for", "state", "known",
                                                                         ["reason" (why not fenced)]}
    POST <peer>/peer/release/<name>  {"token": T}                -> 200 {"released": bool}

A peer is idle for the instance when it fenced it (it was not waking or stopping it), has nothing in
flight and nobody held, and its last activity is at least the instance's idle timeout ago (or never);
an instance it does not know (another owner label) does not keep it up. Anything else -- a peer busy,
unreachable, slow (C{timeout}), answering an error or nonsense -- means "not idle": nothing is stopped,
and the reason is logged. Fences expire by themselves after S seconds, so a stopper that dies between
fence and release holds nobody's requests for longer than that.

The first process of a C{--workers} group answers for the whole group on its API listener
(L{GroupFences}): it relays each fence and release to its workers' internal C{/peer} and reports the
sum. Fences arriving on an internal socket (from a sibling, which asks every sibling itself) are not
relayed again.
"""

from __future__ import annotations

import json
import uuid
from typing import Callable, Optional, Sequence

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.logger import Logger
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from wakeproxy.httpclient import read_body

__all__ = ["GroupFences", "Peers", "group_report", "http_caller", "peer_idle"]

#: seconds a peer has to answer a fence or release
CALL_TIMEOUT = 5.0
#: seconds a worker has to answer a fence or release relayed by its first process (within CALL_TIMEOUT)
RELAY_TIMEOUT = 2.0

#: (method, url, json document) -> Deferred firing with (status, body bytes)
Caller = Callable[[bytes, str, dict], Deferred]


def peer_idle(report, idle_timeout: Optional[float]) -> Optional[str]:
    """None when a peer's fence C{report} says idle for an instance with C{idle_timeout}, else why not."""
    if not isinstance(report, dict):
        return "its answer is not a JSON object"
    if report.get("known") is False:
        return None
    if report.get("fenced") is not True:
        return report.get("reason") or "it did not fence the instance (it is {})".format(report.get("state"))
    if report.get("inflight") or report.get("held"):
        return "it has {} requests in flight and {} held".format(report.get("inflight"), report.get("held"))
    idle_for = report.get("idle_for")
    if idle_for is not None and idle_timeout is not None:
        if not isinstance(idle_for, (int, float)):
            return "its idle_for is not a number"
        if idle_for < idle_timeout:
            return "its last activity was {:.1f}s ago (idle timeout {:g}s)".format(idle_for, idle_timeout)
    return None


class Peers:
    """The peers this replica asks before stopping an instance."""

    log = Logger()

    def __init__(self, urls: Sequence[str], call: Caller, fence_seconds: float = 30.0):
        self._urls = [url.rstrip("/") for url in urls]
        self._call = call
        self._fence_seconds = fence_seconds

    def __bool__(self) -> bool:
        return bool(self._urls)

    def fence(self, name: str, idle_timeout: Optional[float]) -> Deferred:
        """
        Fence C{name} on every peer; fire with C{(token, None, False)} when every one says idle, else with
        C{(token, reason, unreachable)}: why not, and whether a peer could not be asked at all (rather than
        being busy). Release with L{release} in either case.
        """
        token = uuid.uuid4().hex
        asked = self.ask("fence", name, {"token": token, "seconds": self._fence_seconds})

        def decide(answers) -> tuple:
            busy = None
            for url, ok, value in answers:
                if not ok:
                    return token, "peer {} could not be asked ({})".format(url, _why(value)), True
                reason = peer_idle(value, idle_timeout)
                if reason is not None and busy is None:
                    busy = "peer {}: {}".format(url, reason)
            return token, busy, False

        return asked.addCallback(decide)

    def release(self, name: str, token: str) -> Deferred:
        """
        Release the fences C{token} on every peer (best effort: a peer that misses it lets it expire); fire
        with whether any peer had it.
        """

        def logged(answers) -> bool:
            for url, ok, value in answers:
                if not ok:
                    self.log.info("could not release the fence on {instance} at {peer} ({why}); it expires by "
                                  "itself", instance=name, peer=url, why=_why(value))
            return any(ok and isinstance(value, dict) and value.get("released") is True for _, ok, value in answers)

        return self.ask("release", name, {"token": token}).addCallback(logged)

    def ask(self, verb: str, name: str, doc: dict) -> Deferred:
        """C{POST /peer/<verb>/<name>} to every peer; fire with C{[(url, ok, answer or Failure)]}."""
        calls = [self._ask(url, verb, name, doc) for url in self._urls]
        answers = DeferredList(calls, consumeErrors=True)
        return answers.addCallback(lambda results: [(url, ok, value) for url, (ok, value) in zip(self._urls, results)])

    def _ask(self, url: str, verb: str, name: str, doc: dict) -> Deferred:
        d = self._call(b"POST", "{}/peer/{}/{}".format(url, verb, name), doc)

        def parsed(answer):
            status, body = answer
            if status != 200:
                raise PeerError("it answered {}".format(status))
            try:
                return json.loads(body)
            except ValueError:
                raise PeerError("its answer is not JSON")

        return d.addCallback(parsed)


class PeerError(Exception):
    pass


def _why(failure) -> str:
    return failure.getErrorMessage() or failure.type.__name__


def group_report(here: dict, answers: list) -> dict:
    """
    The fence report of a C{--workers} group: its first process's own (C{here}) and its workers' (C{answers},
    as from L{Peers.ask}). Fenced only if every process that knows the instance fenced it; a worker that could
    not be asked or answered nonsense has not (C{"reason"} says which). In flight and held callers are summed,
    C{idle_for} is the most recent activity's.
    """
    reports, reason = [here], None
    for url, ok, value in answers:
        if not ok:
            reason = reason or "worker {} could not be asked ({})".format(url, _why(value))
        elif not isinstance(value, dict):
            reason = reason or "worker {} answered something else than a JSON object".format(url)
        else:
            reports.append(value)
            if value.get("known") is not False and value.get("fenced") is not True and reason is None:
                reason = "worker {} did not fence the instance (it is {})".format(url, value.get("state"))
    known = [r for r in reports if r.get("known") is not False]
    if not known and reason is None:
        return here
    idle = [r["idle_for"] for r in known if r.get("idle_for") is not None]
    report = {"known": True, "fenced": reason is None and all(r.get("fenced") is True for r in known),
              "state": here["state"],
              "inflight": sum(r.get("inflight") or 0 for r in known), "held": sum(r.get("held") or 0 for r in known),
              "idle_for": min(idle) if idle else None}
    if reason is not None:
        report["reason"] = reason
    return report


class GroupFences:
    """
    The first process of C{--workers}, fenced by a peer on its API listener: it fences the instance here and
    in every worker (their internal C{/peer}, L{RELAY_TIMEOUT}), and answers with L{group_report}. Releases
    go to every worker too. When the group did not take the fence, the fences some of it took stay until the
    peer's release (its stopper always sends one) or their expiry.
    """

    def __init__(self, waker, workers: Peers):
        self._waker = waker
        self._workers = workers

    def fence(self, name: str, token: str, seconds: float) -> Deferred:
        here = self._waker.fence(name, token, seconds)
        asked = self._workers.ask("fence", name, {"token": token, "seconds": seconds})
        return asked.addCallback(lambda answers: group_report(here, answers))

    def release(self, name: str, token: str) -> Deferred:
        here = self._waker.release(name, token)
        return self._workers.release(name, token).addCallback(lambda there: here or there)


def http_caller(reactor, agent, secret: str, timeout: float = CALL_TIMEOUT) -> Caller:
    """A L{Caller} over a twisted.web Agent, authenticated with the shared secret, with a deadline."""
    headers = {b"authorization": [b"Bearer " + secret.encode("utf-8")], b"content-type": [b"application/json"]}

    def call(method: bytes, url: str, doc: dict) -> Deferred:
        body = _Body(json.dumps(doc).encode("utf-8"))
        d = agent.request(method, url.encode("utf-8"), Headers(headers), body)
        d.addCallback(lambda response: read_body(response).addCallback(lambda data: (response.code, data)))
        d.addTimeout(timeout, reactor)
        return d

    return call


@implementer(IBodyProducer)
class _Body:
    """A small request body, written at once."""

    def __init__(self, data: bytes):
        self._data = data
        self.length = len(data)

    def startProducing(self, consumer) -> Deferred:
        consumer.write(self._data)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass
