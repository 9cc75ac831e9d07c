"""Answering requests concurrently: core NATS delivers a subscription's messages one by one, so
each request runs in its own task (bounded), and one slow answer (a ledger write) does not hold
up the next."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from agentos_kernel import Bus
from agentos_kernel.nul import parse_request
from pydantic import BaseModel

log = logging.getLogger("agentos.policy")
M = TypeVar("M", bound=BaseModel)


async def serve(bus: Bus, subject: str, request_type: type[M], handler: Callable[[M], Awaitable[BaseModel]],
                *, queue: str, error_reply: Callable[[str], BaseModel], limit: int = 512) -> Any:
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
                except Exception as exc:
                    log.exception("%s: handler failed", subject)
                    reply = error_reply(f"{type(exc).__name__}: {exc}")
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
