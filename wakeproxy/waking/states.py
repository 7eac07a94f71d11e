# -*- test-case-name: tests.test_states -*-
"""
The waker's states and the one table of its transitions.

Every instance the waker knows is in exactly one L{State}. Something happening to it is an L{Event};
L{TRANSITIONS} says, for each (state, event), the state that follows and the name of the waker's method
that carries the transition out (None: nothing to do). A pair missing from the table is illegal: the
waker logs it and refuses it, and the instance stays where it was.

    UNREADY   not known to be ready and nothing under way: stopped, paused, exited, or running but not
              (or no longer) checked -- a request begins a wake
    WAKING    one wake under way (dependencies, start or unpause, readiness, route); callers are held on it
    READY     requests go straight upstream, to the address on the instance's L{Ticket}
    STOPPING  a stop or pause under way (idle sleep or the deploy API's halt); callers are held and wake
              the instance again once it is down
    FENCED    a peer replica is about to stop it (L{wakeproxy.waking.peers}): new callers are held; once
              every fence is released (or expired) it is READY again if it was and still runs, else
              UNREADY and the held callers wake it
"""

from __future__ import annotations

from enum import Enum
from typing import NamedTuple, Optional

__all__ = ["Event", "State", "TRANSITIONS", "Transition", "transition"]


class State(Enum):
    UNREADY = "unready"
    WAKING = "waking"
    READY = "ready"
    STOPPING = "stopping"
    FENCED = "fenced"


class Event(Enum):
    #: callers wait for the instance (C{wait_ready}); they are already queued when this fires
    HOLD = "hold"
    #: the wake finished: the instance is ready
    WOKEN = "woken"
    #: the wake failed (start refused, exited, unhealthy, dependency...)
    WAKE_FAILED = "wake-failed"
    #: the wake's deadline passed
    EXPIRED = "expired"
    #: a new snapshot: running and not unhealthy
    RUNNING = "running"
    #: a new snapshot: running, Docker health "unhealthy"
    UNHEALTHY = "unhealthy"
    #: a new snapshot: not running (stopped, exited, paused) or removed
    EXITED = "exited"
    #: idle: stop or pause it (the idle stopper)
    SLEEP = "sleep"
    #: stop it now, busy or not (the deploy API)
    HALT = "halt"
    #: every stop or pause under way finished (or failed)
    DOWN = "down"
    #: a peer asks to hold the instance's new requests while it decides to stop it
    FENCE = "fence"
    #: the last fence went (released or expired), the instance was ready and still runs
    RESUME = "resume"
    #: the last fence went, and the instance was not ready or is no longer running
    RELEASE = "release"


class Transition(NamedTuple):
    next: State
    #: the name of the waker's method run after the state changed (it gets the instance and the event's
    #: arguments), or None
    action: Optional[str] = None


_U, _W, _R, _S, _F = State.UNREADY, State.WAKING, State.READY, State.STOPPING, State.FENCED

#: (state, event) -> what follows. Missing pairs are illegal.
TRANSITIONS: dict[tuple[State, Event], Transition] = {
    # a caller is held
    (_U, Event.HOLD): Transition(_W, "_begin_wake"),
    (_W, Event.HOLD): Transition(_W),  # joins the wake under way (single flight)
    (_R, Event.HOLD): Transition(_R, "_serve_held"),
    (_S, Event.HOLD): Transition(_S),  # held until the instance is down, then woken again
    (_F, Event.HOLD): Transition(_F),  # held until the fences go
    # the wake ends
    (_W, Event.WOKEN): Transition(_R, "_woken"),
    (_W, Event.WAKE_FAILED): Transition(_U, "_wake_failed"),
    (_W, Event.EXPIRED): Transition(_U, "_wake_expired"),
    # snapshots from the runtime
    (_U, Event.RUNNING): Transition(_U),
    (_W, Event.RUNNING): Transition(_W, "_running_while_waking"),
    (_R, Event.RUNNING): Transition(_R, "_refresh_ticket"),
    (_S, Event.RUNNING): Transition(_S),
    (_F, Event.RUNNING): Transition(_F),
    (_U, Event.UNHEALTHY): Transition(_U),
    (_W, Event.UNHEALTHY): Transition(_W, "_unhealthy_while_waking"),
    (_R, Event.UNHEALTHY): Transition(_U, "_lost"),
    (_S, Event.UNHEALTHY): Transition(_S),
    (_F, Event.UNHEALTHY): Transition(_F, "_forget_ticket"),
    (_U, Event.EXITED): Transition(_U),
    (_W, Event.EXITED): Transition(_W, "_exited_while_waking"),
    (_R, Event.EXITED): Transition(_U, "_lost"),
    (_S, Event.EXITED): Transition(_S),  # what a stop is for
    (_F, Event.EXITED): Transition(_F, "_forget_ticket"),
    # going down: an idle sleep only from rest; the API's halt from anywhere
    (_U, Event.SLEEP): Transition(_S, "_go_to_sleep"),
    (_R, Event.SLEEP): Transition(_S, "_go_to_sleep"),
    (_F, Event.SLEEP): Transition(_S, "_go_to_sleep"),  # two replicas deciding at once: both may stop it
    (_U, Event.HALT): Transition(_S, "_halt"),
    (_R, Event.HALT): Transition(_S, "_halt"),
    (_W, Event.HALT): Transition(_S, "_abandon_and_halt"),  # its held callers wake it again once it is down
    (_S, Event.HALT): Transition(_S, "_halt"),  # one more stop under way; down once both finished
    (_F, Event.HALT): Transition(_S, "_halt"),
    (_S, Event.DOWN): Transition(_U, "_down"),
    # fences from peers (a waking or stopping instance is busy: the fence is not taken, the peer told so)
    (_U, Event.FENCE): Transition(_F, "_fence"),
    (_R, Event.FENCE): Transition(_F, "_fence"),
    (_F, Event.FENCE): Transition(_F, "_fence"),
    (_W, Event.FENCE): Transition(_W),
    (_S, Event.FENCE): Transition(_S),
    (_F, Event.RESUME): Transition(_R, "_resume"),
    (_F, Event.RELEASE): Transition(_U, "_down"),  # held callers wake it, as after a stop
}


def transition(state: State, event: Event) -> Optional[Transition]:
    """What follows C{event} in C{state}; None when the pair is illegal."""
    return TRANSITIONS.get((state, event))
