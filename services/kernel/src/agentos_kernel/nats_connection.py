"""The NATS connection under a :class:`~agentos_kernel.bus.Bus`: unbounded reconnects, a fast
failure when the server cannot be reached at all, and the permission violations it reports.

A server enforcing least-privilege permissions refuses a publish or subscribe asynchronously (an
error callback, not an exception on the call), so :func:`connect_nats` records each refusal by
subject; the bus then fails the refused publish with :class:`PermissionDenied` instead of waiting
for an ack that never comes.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import nats
import nats.errors
from nats.aio.client import Client as NATS

from agentos_kernel.exceptions import AgentOSError, BusUnavailable
from agentos_kernel.faults import FAULTS

log = logging.getLogger("agentos.bus")  # the bus's connection: it logs as the bus


class PermissionDenied(AgentOSError):
    """The NATS server refused this user a publish or subscribe (least-privilege permissions): the
    deployment's grants must change (:mod:`agentos_kernel.grants`). Reported like a configuration
    error, but not a ``ValueError``: code that treats those as bad input must not drop work for it."""

    code = "permission_denied"


_VIOLATION = re.compile(r'permissions violation for (publish|subscription) to "?([^"\s\']+)', re.I)


def _error_callback(user: str | None, denied: dict[str, float] | None) -> Callable[[Exception], Awaitable[None]]:
    """The connection's error callback: a permission violation is logged as an error and recorded
    in ``denied`` (lower-cased subject -> time); the connection's own errors (reconnects, slow
    consumers) are only a debug line. nats-py also hands it what a subscription's callback raised:
    an error of any other type is one of those, logged and counted (:mod:`agentos_kernel.faults`)."""

    async def on_error(exc: Exception) -> None:
        found = _VIOLATION.search(str(exc))
        if found is not None:
            log.error("NATS refused %s (user %s): %s", found.group(2), user or "-", exc)
            if denied is not None:
                denied[found.group(2).lower()] = time.monotonic()
        elif isinstance(exc, nats.errors.Error | OSError | TimeoutError):
            log.debug("nats: %s", exc)
        else:  # what a subscription's callback raised: a bug there, not the network
            log.warning("nats: a subscription's callback failed: %r", exc, exc_info=exc)
            FAULTS.note("a NATS subscription's callback", exc, level=logging.DEBUG)  # logged above

    return on_error


async def connect_nats(
    url: str,
    *,
    name: str,
    timeout: float = 3.0,
    user: str | None = None,
    password: str | None = None,
    inbox_prefix: str | None = None,
    denied: dict[str, float] | None = None,
) -> NATS:
    """Connect with unbounded reconnects; fail fast (BusUnavailable) if the first connect fails.

    Permission violations the server reports are logged and recorded in ``denied`` (subject ->
    time), so a publish the server refused fails with :class:`PermissionDenied` instead of waiting.
    """
    options: dict[str, Any] = {"user": user, "password": password} if user else {}
    if inbox_prefix:
        options["inbox_prefix"] = inbox_prefix
    try:
        # nats-py keeps retrying a first connect forever when reconnects are unbounded,
        # so the first connect gets its own deadline.
        return await asyncio.wait_for(
            nats.connect(
                servers=[u.strip() for u in url.split(",")],
                name=name,
                connect_timeout=timeout,
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.25,
                error_cb=_error_callback(user, denied),
                **options,
            ),
            timeout + 1,
        )
    except TimeoutError:
        raise BusUnavailable(f"cannot reach NATS at {url!r}: no answer within {timeout + 1:.0f}s") from None
    except (nats.errors.Error, OSError, ValueError) as exc:  # nats-py's own, the socket's, a bad URL or port
        raise BusUnavailable(f"cannot reach NATS at {url!r}: {exc or type(exc).__name__}") from None
