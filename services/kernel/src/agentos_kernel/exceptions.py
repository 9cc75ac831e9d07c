"""Errors and handler outcomes of AgentOS: one tree, reported the same way everywhere.

::

    AgentOSError                  exit 2   HTTP 500  error
    ├── ConfigError               exit 2   HTTP 500  config          bad configuration or misuse; never retried
    ├── PermissionDenied          exit 2   HTTP 500  permission_denied  a NATS user lacks a permission it
    │                             (agentos_kernel.nats_connection)      needs: the grants must change
    ├── InvalidInput              exit 2   HTTP 422  invalid_input   input that can never succeed: 4xx, or
    │                                                                dead-lettered by a consumer at once
    ├── Refused                   exit 3   HTTP 403  refused         a governance refusal (policy denial,
    │   └── Halted                (agentos_kernel.control)           budget, kill switch)
    ├── Unavailable               exit 75  HTTP 503  unavailable     a dependency cannot serve now: wait and
    │   └── BusUnavailable                           bus_unavailable try again (``retry_after_s``), never a
    │                                                                reason to give the work up
    ├── Failed                    exit 1   HTTP 500  failed          the work failed for good
    │   ├── ModelCallFailed       (agentos_kernel.llm)  model_unavailable: every model in the chain
    │   │                                               failed (retryable if only unavailable)
    │   └── ShredError            (agentos_kernel.shred)  personal fields could not be sealed
    └── HandlerOutcome                                               a handler's word on its message
        ├── Retry                 try again later (nak with a delay), dead-letter after the last attempt
        └── Reject                never retry: dead-letter now, with the reason

How each surface reports an error is data on its class (``code``, ``http_status``, ``exit_code``,
``retryable``; an instance may set ``retry_after_s``), read through :func:`describe`, which also
places errors raised outside this tree: the schemas' ValueError subclasses (a malformed event, a bad
name, an invalid charter) and pydantic's ``ValidationError`` are input; anything else is an
internal error. The CLI exits with ``exit_code`` and prints one line; the gateway answers a
problem document with ``http_status`` and ``code`` (and ``Retry-After`` when it is known);
consumers dead-letter input at once and hold work through an outage.

Exit codes: 0 done; 1 the command ran and found a problem (``status``) or the work failed; 2 usage,
configuration or input; 3 refused by governance; 75 temporarily unavailable (``EX_TEMPFAIL``: try
again later).
"""

from __future__ import annotations

from dataclasses import dataclass


class AgentOSError(Exception):
    """Base of every AgentOS error; the class attributes say how every surface reports it."""

    code = "error"
    """Stable machine-readable name (problem ``code``, dead-letter reason prefix)."""
    http_status = 500
    exit_code = 2
    retryable = False
    """Whether the same work may succeed if tried again unchanged, later."""
    retry_after_s: float | None = None
    """When known: how long to wait before trying again."""


class ConfigError(AgentOSError, ValueError):
    """Bad configuration or misuse; the message names the setting."""

    code = "config"


class InvalidInput(AgentOSError, ValueError):
    """Input that can never succeed as it is; the message says what is wrong with it."""

    code = "invalid_input"
    http_status = 422


class Refused(AgentOSError):
    """Governance refused the work (a policy denial, a budget, a kill switch); not retried as is."""

    code = "refused"
    http_status = 403
    exit_code = 3


class Failed(AgentOSError):
    """The work failed for good (every attempt used, or nothing left to try)."""

    code = "failed"
    exit_code = 1


class Unavailable(AgentOSError):
    """An infrastructure dependency cannot serve now (down, restarting, not answering in time).

    Retryability is the error's own data: ``retryable`` is always True, and the work that met it
    is to wait (backing off) and try again, not to count a failed attempt. ``dependency`` names
    what is unavailable, for the reasons operators read (``"policy store (Postgres)"``).
    """

    code = "unavailable"
    http_status = 503
    exit_code = 75
    retryable = True

    def __init__(self, dependency: str, detail: str = "", *, retry_after_s: float | None = None) -> None:
        super().__init__(f"{dependency} unavailable" + (f" ({detail})" if detail else ""))
        self.dependency = dependency
        self.detail = detail
        self.retry_after_s = retry_after_s


class BusUnavailable(Unavailable):
    """NATS could not be reached, or did not acknowledge a publish in time."""

    code = "bus_unavailable"

    def __init__(self, message: str) -> None:
        AgentOSError.__init__(self, message)
        self.dependency = "NATS"
        self.detail = message
        self.retry_after_s = 1.0


class HandlerOutcome(AgentOSError):
    """A handler's decision about the message it was given."""


class Retry(HandlerOutcome):
    """Transient failure: redeliver later. ``delay`` overrides the consumer's backoff."""

    def __init__(self, reason: str, *, delay: float | None = None) -> None:
        super().__init__(reason)
        self.delay = delay


class Reject(HandlerOutcome):
    """Permanent failure: the message can never succeed; dead-letter it now."""


@dataclass(frozen=True)
class Described:
    """How an error is reported: what :func:`describe` returns."""

    code: str
    http_status: int
    exit_code: int
    retryable: bool
    retry_after_s: float | None
    message: str


def describe(exc: BaseException) -> Described:
    """How any error is reported (see the module docs): by its class in the tree, the schemas'
    and pydantic's validation errors as input, anything else as internal."""
    if isinstance(exc, AgentOSError):
        return Described(exc.code, exc.http_status, exc.exit_code, exc.retryable, exc.retry_after_s, str(exc))
    if _is_input(exc):
        return Described("invalid_input", 422, 2, False, None, str(exc))
    return Described("internal_error", 500, 1, False, None, f"{type(exc).__name__}: {exc}")


def _is_input(exc: BaseException) -> bool:
    from pydantic import ValidationError

    module = type(exc).__module__
    return isinstance(exc, ValidationError) or (isinstance(exc, ValueError) and module.startswith("agentos_schemas"))
