"""Stopping background tasks for sure.

``task.cancel(); await task`` can wait forever: when a cancellation lands just as an inner
``asyncio.wait_for`` completes (Python 3.11's ``wait_for``, which nats-py's ``next_msg`` and
``fetch`` use), the cancellation is swallowed and a ``while True`` loop goes on. A service that
stops must stop, so its background loops are stopped with :func:`cancel_and_wait`, which cancels
again until the task is done.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from agentos_kernel.faults import FAULTS

log = logging.getLogger("agentos.tasks")


async def cancel_and_wait(task: asyncio.Task[Any] | None, timeout: float = 10.0, every: float = 0.1) -> bool:
    """Cancel ``task`` and wait until it is done, cancelling again every ``every`` seconds.

    Returns whether it finished within ``timeout``; its result or exception is consumed, never
    raised, but an exception it ended with (a loop that died before it was stopped) is reported:
    logged and counted (:mod:`agentos_kernel.faults`). Cancelling the caller cancels only the wait.
    """
    if task is None:
        return True
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not task.done():
        task.cancel()
        left = deadline - loop.time()
        if left <= 0:
            log.warning("task %s did not stop within %.1fs of being cancelled", task.get_name(), timeout)
            return False
        await asyncio.wait({task}, timeout=min(every, left))
    error = None if task.cancelled() else task.exception()
    if error is not None:  # it died on its own, unseen until now: say so rather than drop it here
        FAULTS.note(f"background task {task.get_name()}", error)
    return True


async def wait_done(task: asyncio.Future[Any]) -> None:
    """Wait until ``task`` is done without raising its error: the caller raises it with
    ``task.result()`` where it matters (asyncio does not log it as never retrieved meanwhile)."""
    await asyncio.wait({task})
    _retrieved(task)


def _retrieved(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()
