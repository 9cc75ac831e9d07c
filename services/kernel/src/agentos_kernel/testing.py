"""Test support shipped with the kernel: real servers for tests, unique names, waiting helpers.

Tests run against a real NATS JetStream and a real Postgres. With ``AGENTOS_TEST_NATS_URL`` /
``AGENTOS_TEST_DATABASE_URL`` set they use those; otherwise they start embedded ones on free
ports in a temporary directory.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentos_schemas import Event, codec, new_event_id

from agentos_kernel.embedded import EmbeddedNats, EmbeddedPostgres

if TYPE_CHECKING:
    from agentos_kernel.bus import Bus


@contextmanager
def test_servers() -> Iterator[tuple[str, str]]:
    """(nats_url, database_url) for a test session."""
    nats_url = os.environ.get("AGENTOS_TEST_NATS_URL")
    db_url = os.environ.get("AGENTOS_TEST_DATABASE_URL")
    root = Path(tempfile.mkdtemp(prefix="agentos-test-"))
    nats = None if nats_url else EmbeddedNats(root / "nats", sync="default")
    pg = None if db_url else EmbeddedPostgres(root / "postgres")
    try:
        if nats is not None:
            nats_url = nats.start()
        if pg is not None:
            db_url = pg.start()
        assert nats_url and db_url
        yield nats_url, db_url
    finally:
        if pg is not None:
            pg.stop()
        if nats is not None:
            nats.stop()


def unique(prefix: str = "t") -> str:
    """A short unique lower-case token for tenants, durables and subjects."""
    return f"{prefix}{new_event_id().replace('-', '')[-12:]}"


async def eventually(check: Callable[[], Awaitable[bool]], *, timeout: float = 20.0, every: float = 0.05) -> None:
    """Wait until ``check()`` is true, or fail with AssertionError after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if await check():
            return
        await asyncio.sleep(every)
    raise AssertionError(f"condition not met within {timeout}s")


async def events_on(bus: Bus, subject: str, n: int, *, timeout: float = 20.0) -> list[Event[Any]]:
    """The first ``n`` events stored on ``subject`` (from the start of the log), as they are
    delivered to an ordered push consumer: a test waits on the events themselves, not by polling
    the log. Fails with AssertionError, saying how many came, after ``timeout`` seconds."""
    from nats.js import api

    got: list[Event[Any]] = []
    enough = asyncio.Event()

    async def on_msg(msg: Any) -> None:
        try:
            got.append(await bus.decode(msg.data, msg.headers))
        except codec.DecodeError:
            return  # not an event: the consumers dead-letter it
        if len(got) >= n:
            enough.set()

    sub = await bus.js.subscribe(subject, cb=on_msg, ordered_consumer=True, deliver_policy=api.DeliverPolicy.ALL)
    try:
        await asyncio.wait_for(enough.wait(), timeout)
    except TimeoutError:
        raise AssertionError(f"{len(got)} of {n} events on {subject!r} within {timeout}s") from None
    finally:
        await sub.unsubscribe()
    return got[:n]
