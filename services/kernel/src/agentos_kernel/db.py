"""Postgres access for services: a pool, per-service migrations, and the tracking table that
makes a handler's effects happen once even when JetStream redelivers its event."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from agentos_kernel import guard
from agentos_kernel.exceptions import ConfigError, Unavailable

Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"
"""A Postgres connection as code receives one: a connection of its own, or one lent by a pool
(``async with pool.acquire() as conn``); type the ``conn`` parameters of query functions with it."""

_TRACKING = """
CREATE TABLE IF NOT EXISTS {schema}.processed_events (
    consumer    text        NOT NULL,
    event_id    text        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
)"""


async def _no_session_reset(conn: asyncpg.Connection) -> None:
    """Pooled connections carry no session state here: services use transaction-scoped settings
    and locks (``SET LOCAL``, ``pg_advisory_xact_lock``), and the two that take a session lock or
    a ``SET`` (the audit's writer lock, its synthetic loader) undo it before giving the connection
    back. asyncpg still rolls back an open transaction before this runs. So the reset query
    asyncpg sends on every release (unlock all, close cursors, unlisten, reset all: one more round
    trip per use of the pool) is skipped."""


async def create_pool(url: str | None, *, min_size: int = 1, max_size: int = 10, redact: bool = True) -> asyncpg.Pool:
    """A pool whose connections redact every JSON parameter they send (``redact``; see
    :func:`agentos_kernel.guard.install_codecs`). Only a projection that must hold the log's
    bytes as they are (the audit's, already redacted on publish) turns it off."""
    if not url:
        raise ConfigError("AGENTOS_DATABASE_URL is not set (run `agentos up`, or point it at Postgres)")
    pool = await asyncpg.create_pool(
        url,
        min_size=min_size,
        max_size=max_size,
        timeout=10,
        reset=_no_session_reset,
        init=guard.install_codecs if redact else None,
    )
    assert pool is not None
    return pool


async def migrate(pool: asyncpg.Pool, schema: str, steps: Sequence[str]) -> None:
    """Apply ``steps`` in order, once each, inside the service's own schema.

    Steps are append-only: a step, once shipped, is never edited; changes are new steps.
    An advisory lock keeps two replicas from migrating at the same time.
    """
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"agentos-migrate-{schema}")
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        await conn.execute(_TRACKING.format(schema=schema))
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {schema}.migrations"
            " (step int PRIMARY KEY, applied_at timestamptz DEFAULT now())"
        )
        done = {r["step"] for r in await conn.fetch(f"SELECT step FROM {schema}.migrations")}
        for number, sql in enumerate(steps, start=1):
            if number not in done:
                await conn.execute(sql.format(schema=schema))
                await conn.execute(f"INSERT INTO {schema}.migrations (step) VALUES ($1)", number)


async def first_time(conn: Connection, schema: str, consumer: str, event_id: str) -> bool:
    """Record that ``consumer`` processed ``event_id``; False if it already had.

    Call inside the transaction that writes the handler's effects, so both commit or neither.
    """
    row = await conn.fetchval(
        f"INSERT INTO {schema}.processed_events (consumer, event_id) VALUES ($1, $2) "
        "ON CONFLICT DO NOTHING RETURNING 1",
        consumer,
        event_id,
    )
    return row is not None


#: What Postgres being down, restarting or unreachable looks like to asyncpg: a connection lost or
#: refused (``OSError``: refused, reset, the socket file gone; ``TimeoutError`` is one too), the
#: server shutting down, starting up or cancelling for an operator (class 57), or out of
#: connection slots.
_DOWN = (
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.TooManyConnectionsError,
    OSError,
)
POSTGRES_DOWN_TYPES: tuple[type[Exception], ...] = (Unavailable, *_DOWN, asyncpg.InterfaceError)
"""Every type :func:`postgres_down` may say yes to: catch these, then ask it (anything else is not
an outage and need not be caught to find out)."""


def postgres_down(exc: BaseException) -> bool:
    """Whether ``exc`` says Postgres cannot serve now (rather than that a query is wrong)."""
    if isinstance(exc, (Unavailable, *_DOWN)):
        return True
    # A pooled connection closed under a query (the server went away mid-use).
    return isinstance(exc, asyncpg.InterfaceError) and "closed" in str(exc)


@contextmanager
def unavailable_as(dependency: str) -> Iterator[None]:
    """Turn Postgres being unavailable inside the block into :class:`Unavailable` naming ``dependency``
    (e.g. ``"policy store (Postgres)"``); any other error passes unchanged."""
    try:
        yield
    except Unavailable:
        raise
    except POSTGRES_DOWN_TYPES as exc:
        if not postgres_down(exc):
            raise
        raise Unavailable(dependency, type(exc).__name__) from exc
