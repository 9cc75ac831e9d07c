"""Errors and handler outcomes of the bus kernel.

::

    AgentOSError
    ├── ConfigError             misuse or bad configuration (a user error, never retried)
    ├── Unavailable             a dependency (Postgres, the policy service …) cannot serve now:
    │   │                       wait and try again; never a reason to give the work up
    │   └── BusUnavailable      NATS could not be reached or did not acknowledge in time
    └── HandlerOutcome          raised by a handler to say what happens to the message
        ├── Retry               try again later (nak with a delay), dead-letter after the last attempt
        └── Reject              never retry: dead-letter now, with the reason

Any other exception from a handler is treated as :class:`Retry`.
"""

from __future__ import annotations


class AgentOSError(Exception):
    """Base of every AgentOS error."""


class ConfigError(AgentOSError, ValueError):
    """Bad configuration or misuse; the message names the setting."""


class Unavailable(AgentOSError):
    """An infrastructure dependency cannot serve now (down, restarting, not answering in time).

    Retryability is the error's own data: ``retryable`` is always True, and the work that met it
    is to wait (backing off) and try again, not to count a failed attempt. ``dependency`` names
    what is unavailable, for the reasons operators read (``"policy store (Postgres)"``).
    """

    retryable = True

    def __init__(self, dependency: str, detail: str = "") -> None:
        super().__init__(f"{dependency} unavailable" + (f" ({detail})" if detail else ""))
        self.dependency = dependency
        self.detail = detail


class BusUnavailable(Unavailable):
    """NATS could not be reached, or did not acknowledge a publish in time."""

    def __init__(self, message: str) -> None:
        AgentOSError.__init__(self, message)
        self.dependency = "NATS"
        self.detail = message


class HandlerOutcome(AgentOSError):
    """A handler's decision about the message it was given."""


class Retry(HandlerOutcome):
    """Transient failure: redeliver later. ``delay`` overrides the consumer's backoff."""

    def __init__(self, reason: str, *, delay: float | None = None) -> None:
        super().__init__(reason)
        self.delay = delay


class Reject(HandlerOutcome):
    """Permanent failure: the message can never succeed; dead-letter it now."""
