"""Answering requests concurrently: core NATS delivers a subscription's messages one by one, so
each request runs in its own task (bounded), and one slow answer (a ledger write) does not hold
up the next. A handler that fails because the policy store is down answers with that (what is
unavailable), not with the raw driver error."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from agentos_kernel import Bus
from agentos_kernel.db import postgres_down
from agentos_kernel.nul import parse_request
from pydantic import BaseModel

log = logging.getLogger("agentos.policy")
M = TypeVar("M", bound=BaseModel)


async def serve(
    bus: Bus,
    subject: str,
    request_type: type[M],
    handler: Callable[[M], Awaitable[BaseModel]],
    *,
    queue: str,
    error_reply: Callable[[str], BaseModel],
    limit: int = 512,
) -> Any:
    """Subscribe ``handler`` on ``subject`` in queue group ``queue``; returns the subscription."""
    slots = asyncio.Semaphore(limit)
    running: set[asyncio.Task[None]] = set()

    async def answer(msg: Any) -> None:
        try:
            try:
                request = parse_request(request_type, msg.data)
            except ValueError as exc:
                reply: BaseModel = error_reply(f"invalid request: {exc}")
            else:
                try:
                    reply = await handler(request)
                except Exception as exc:  # noqa: BLE001  (boundary: the reply carries the error, logged)
                    reply = error_reply(_failure(subject, exc))
            if msg.reply:
                await msg.respond(reply.model_dump_json().encode())
        finally:
            slots.release()

    async def on_msg(msg: Any) -> None:
        await slots.acquire()
        task = asyncio.create_task(answer(msg))
        running.add(task)
        task.add_done_callback(running.discard)

    return await bus.nc.subscribe(subject, queue=queue, cb=on_msg)


def _failure(subject: str, exc: Exception) -> str:
    """What a caller is told when its request could not be answered."""
    if postgres_down(exc):
        log.warning("%s: policy store (Postgres) unavailable: %r", subject, exc)
        return f"policy store (Postgres) unavailable ({type(exc).__name__}); try again later"
    log.exception("%s: handler failed", subject)
    return f"{type(exc).__name__}: {exc}"
