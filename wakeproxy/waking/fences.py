# -*- test-case-name: tests.test_peers -*-
"""
The waker's side of replicas acting as one: a peer about to stop an instance fences it here first.

C{fence(name, token, seconds)} holds the instance's new requests (state FENCED) and reports what this
replica knows of it: requests in flight, callers held, seconds since its last activity. The fence goes
with C{release(name, token)}, or by itself after C{seconds} (a stopper that died cannot hold an
instance forever). When the last fence goes, a ready instance that still runs is ready again (held
callers are served at once); otherwise held callers wake it, as after a stop. A waking or stopping
instance is not fenced: the report says so, and the peer does not stop it.
"""

from __future__ import annotations

from typing import Optional

from wakeproxy.waking.instance import Instance
from wakeproxy.waking.outcomes import Ticket
from wakeproxy.waking.states import Event, State

__all__ = ["FenceActions"]


class FenceActions:
    """Mixed into L{wakeproxy.waking.waker.Waker}: the FENCE, RESUME and RELEASE transitions and their API."""

    def fence(self, name: str, token: str, seconds: float) -> dict:
        """Fence C{name} for a peer (until C{release(name, token)}, at most C{seconds}); report its activity."""
        if self._runtime.get(name) is None:
            return {"known": False, "fenced": False, "state": None, "inflight": 0, "held": 0, "idle_for": None}
        instance = self._instance(name)
        self._fire(instance, Event.FENCE, token, seconds)
        now = self._clock.seconds()
        return {"known": True, "fenced": token in instance.fences, "state": instance.state.value,
                "inflight": instance.inflight, "held": len(instance.waiters),
                "idle_for": round(now - instance.last_activity, 3) if instance.last_activity else None}

    def release(self, name: str, token: str) -> bool:
        """Take a peer's fence away; True if it was there."""
        instance = self._instances.get(name)
        if instance is None or token not in instance.fences:
            return False
        call = instance.fences.pop(token)
        if call.active():
            call.cancel()
        self._unfenced(instance)
        return True

    def _fence(self, instance: Instance, token: str, seconds: float) -> None:
        if instance.ticket is not None:
            instance.stashed, instance.ticket = instance.ticket, None
        old = instance.fences.pop(token, None)
        if old is not None and old.active():
            old.cancel()
        instance.fences[token] = self._clock.callLater(seconds, self._fence_expired, instance, token)

    def _fence_expired(self, instance: Instance, token: str) -> None:
        if instance.fences.pop(token, None) is not None:
            self.log.warn("the fence on {instance} ({token}) expired: its peer never released it",
                          instance=instance.name, token=token)
            self._unfenced(instance)

    def _unfenced(self, instance: Instance) -> None:
        if instance.fences or instance.state is not State.FENCED:
            return
        container = self._runtime.get(instance.name)
        if instance.stashed is not None and container is not None and container.running:
            self._fire(instance, Event.RESUME, container)
        else:
            instance.stashed = None
            self._fire(instance, Event.RELEASE)

    def _resume(self, instance: Instance, container) -> None:
        """FENCED -> READY: the ticket it had (following the snapshot), and the callers held meanwhile served."""
        ticket, instance.stashed = instance.stashed, None
        instance.ticket = ticket if ticket.container is container else Ticket(container, self._plan.reach(container))
        self._serve_held(instance)

    def _forget_ticket(self, instance: Instance, container: Optional[object] = None) -> None:
        """Exited or unhealthy while fenced: when the fences go, the instance is woken again, not resumed."""
        instance.stashed = None

    def _drop_fences(self, instance: Instance) -> None:
        """Going down: the fences no longer hold anything (their releases will find nothing)."""
        for call in instance.fences.values():
            if call.active():
                call.cancel()
        instance.fences.clear()
        instance.stashed = None
