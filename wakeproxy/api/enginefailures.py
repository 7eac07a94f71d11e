# -*- test-case-name: tests.test_engine_errors -*-
"""
How the deploy API answers the engine failing: a L{RuntimeFailure} with its C{status} (409 and 424 as
they are, others 502), an engine that cannot be reached or does not answer in time 503 with Retry-After,
a transport error that no runtime wrapped a 503 too (logged), never a 500; a missing instance 404 like
any name the user may not see. What an API client reads of an error is a runtime's message, never a
transport's internals (L{engine_why}).
"""

from __future__ import annotations

from typing import Optional

from twisted.logger import Logger
from twisted.python.failure import Failure

from wakeproxy.api.reply import Reply, crashed, not_found
from wakeproxy.runtime.interface import NoSuchInstance, RuntimeFailure

__all__ = ["ENGINE_RETRY_AFTER", "answer_engine_failure", "engine_unavailable", "engine_why"]

log = Logger()

#: Retry-After (seconds) for an engine that could not be reached, when the error does not say.
ENGINE_RETRY_AFTER = 5
#: modules whose exceptions are the engine's transport failing (a runtime should have wrapped them).
_TRANSPORT_MODULES = ("requests", "urllib3", "docker", "http", "socket", "ssl")


def engine_unavailable(error: BaseException) -> Optional[int]:
    """
    Seconds to wait when C{error} means the engine could not be reached or did not answer in time (a
    L{RuntimeFailure} carrying C{retry_after}, or a transport error no runtime wrapped); else None.
    """
    retry_after = getattr(error, "retry_after", None)
    if isinstance(error, RuntimeFailure):
        if retry_after is not None:
            return max(1, int(retry_after))
        return ENGINE_RETRY_AFTER if getattr(error, "status", 502) == 503 else None
    if isinstance(error, (OSError, TimeoutError)) or type(error).__module__.split(".")[0] in _TRANSPORT_MODULES:
        return ENGINE_RETRY_AFTER
    return None


def engine_why(error: BaseException) -> str:
    """What an API client may read of an engine error: a runtime's message, never a transport's internals."""
    if isinstance(error, RuntimeFailure):
        return str(error)
    return "the Docker engine could not be reached or did not answer in time"


def answer_engine_failure(failure: Failure, reply: Reply, name: str) -> None:
    """The answer when the engine failed on instance C{name} (the last errback of start, stop, delete)."""
    error = failure.value
    retry_after = engine_unavailable(error)
    if failure.check(NoSuchInstance):
        not_found(reply, name)
    elif retry_after is not None:
        if not isinstance(error, RuntimeFailure):
            log.failure("deploy API: the engine failed on {instance}", failure, instance=name)
        reply.problem(503, "the Docker engine is not available for instance {} right now ({}); try again".format(
            name, engine_why(error)), retry_after=retry_after)
    elif failure.check(RuntimeFailure):
        status = getattr(error, "status", 502)
        status = status if status in (409, 424) else 502
        reply.problem(status, "the Docker engine failed on instance {}: {}".format(name, error))
    else:
        crashed(failure, reply)
