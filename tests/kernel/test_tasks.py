"""Background loops stop even when a library swallows the cancellation (cancel_and_wait)."""

from __future__ import annotations

import asyncio
import contextlib

from agentos_kernel.tasks import cancel_and_wait


async def test_a_loop_that_swallows_cancellations_is_stopped() -> None:
    swallowed = 0

    async def loop() -> None:
        # What Python 3.11's wait_for does when the awaited thing finishes as the cancel lands.
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                swallowed += 1
                if swallowed >= 3:
                    raise

    task = asyncio.create_task(loop())
    await asyncio.sleep(0.02)
    assert await cancel_and_wait(task, timeout=5.0, every=0.01)
    assert task.cancelled() and swallowed == 3


async def test_a_task_that_never_stops_is_given_up_on_after_the_timeout() -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0.01)

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0.02)  # running: a task cancelled before its first step just ends
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert not await cancel_and_wait(task, timeout=0.2, every=0.02)
    assert 0.2 <= loop.time() - started < 2.0 and not task.done()
    release.set()
    await task


async def test_finished_failed_and_missing_tasks() -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    failed = asyncio.create_task(fails())
    await asyncio.sleep(0)
    assert await cancel_and_wait(failed)  # the exception is consumed, not raised
    assert await cancel_and_wait(None)
