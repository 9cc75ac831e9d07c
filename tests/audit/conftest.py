"""Audit fixtures: a projector of the session's (shared) log into a schema of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from agentos_audit.lifecycle import ensure_schema
from agentos_audit.projector import Projector
from agentos_audit.publish import Publisher
from agentos_audit.schema import drop_schema, head
from agentos_audit.signing import Signer, load_or_create
from agentos_kernel import Bus
from agentos_kernel.testing import eventually, unique
from agentos_schemas import Event


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    return tmp_path / "audit-key.pem"


@pytest.fixture
def signer(key_file: Path) -> Signer:
    return load_or_create(key_file)


@pytest.fixture
def witness_file(tmp_path: Path) -> Path:
    return tmp_path / "witness.jsonl"


@pytest.fixture
async def audit(bus: Bus, pool: asyncpg.Pool, signer: Signer, witness_file: Path) -> AsyncIterator[Projector]:
    """A running projector with its own schema, durable and witness file (the session log is
    shared by all tests)."""
    schema = unique("audit_")
    await ensure_schema(pool, schema)
    projector = Projector(
        bus,
        pool,
        schema=schema,
        durable=unique("audit"),
        signer=signer,
        batch=256,
        checkpoint_every=200,
        checkpoint_idle_s=0.5,
        publisher=Publisher(bus, schema, "agentos.local/audit", witness_file=witness_file),
    )
    await projector.start()
    yield projector
    await projector.stop()
    await bus.js.delete_consumer("AGENTOS_EVENTS", projector.durable)
    await drop_schema(pool, schema)


async def caught_up(bus: Bus, pool: asyncpg.Pool, schema: str, timeout: float = 30.0) -> int:
    """Wait until the projection's chain reaches the log's current end; returns that sequence."""
    info = await bus.js.stream_info("AGENTOS_EVENTS")
    last = info.state.last_seq

    async def reached() -> bool:
        found = await head(pool, schema)
        return (found.seq if found is not None else 0) >= last

    await eventually(reached, timeout=timeout, every=0.1)
    return last


async def publish_all(bus: Bus, events: list[Event[Any]]) -> None:
    for event in events:
        await bus.publish(event)


Publish = Callable[[list[Event[Any]]], Awaitable[None]]
