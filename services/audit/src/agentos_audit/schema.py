"""The audit service's Postgres schema: tables, indexes, monthly partitions, metadata.

- ``chain``: one row per stream sequence — the exact stored bytes (``raw``), what became of
  them (``kind``: ``event``, ``duplicate`` of an earlier event id, ``rejected`` as not a valid
  event, or ``missing`` from the stream), and the chain ``hash``.
- ``events``: the analysts' projection, one row per distinct event id, partitioned by month of
  the event's ``time`` (partitions are created on demand; times before 2000 or from 2200 on go
  to ``events_default``).
- ``checkpoints``: Ed25519-signed (seq, hash) statements of the chain (before the Merkle tree;
  kept and still verified, no longer written).
- ``tree``: the Merkle tree over the chain's entries (:mod:`agentos_audit.merkle`): one row per
  complete subtree ``(level, idx)``; leaf ``i`` is the chain row of sequence ``tree_base + i``
  (``meta``).
- ``tree_checkpoints``: the signed checkpoint notes of the tree, by tree size, with the stream
  sequence of the ``audit.checkpoint`` event that published each one (null until published).
- ``meta``: which stream the projection is of, and by which projector version.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
from collections.abc import Iterable
from typing import NamedTuple

import asyncpg
from agentos_kernel.db import Connection, migrate
from agentos_kernel.exceptions import ConfigError

from agentos_audit.canonical import GENESIS
from agentos_audit.merkle import Frontier

TABLES = """
CREATE TABLE {schema}.meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE {schema}.chain (
    seq      bigint PRIMARY KEY,
    kind     text   NOT NULL CHECK (kind IN ('event', 'duplicate', 'rejected', 'missing')),
    event_id text,
    code     text,
    reason   text,
    raw      bytea  NOT NULL,
    hash     bytea  NOT NULL
);
CREATE UNIQUE INDEX chain_event_id ON {schema}.chain (event_id) WHERE kind = 'event';
CREATE TABLE {schema}.events (
    seq bigint NOT NULL, id text NOT NULL, type text NOT NULL, source text NOT NULL, subject text,
    tenant text NOT NULL, correlationid text, causationid text, principal text,
    time timestamptz NOT NULL, traceparent text, trace_id text,
    agent text, task_id text, goal_id text,
    models text[] NOT NULL DEFAULT '{{}}', tools text[] NOT NULL DEFAULT '{{}}',
    cost_usd float8 NOT NULL DEFAULT 0, tokens bigint NOT NULL DEFAULT 0,
    tags text[] NOT NULL DEFAULT '{{}}', policy_version text, data jsonb NOT NULL,
    PRIMARY KEY (id, time)
) PARTITION BY RANGE (time);
CREATE TABLE {schema}.events_default PARTITION OF {schema}.events DEFAULT;
CREATE TABLE {schema}.checkpoints (
    seq       bigint PRIMARY KEY,
    hash      bytea NOT NULL,
    key_id    text  NOT NULL,
    message   bytea NOT NULL,
    signature bytea NOT NULL
);
"""

_INDEXES_1 = """
CREATE INDEX events_seq ON {schema}.events (seq);
CREATE INDEX events_type ON {schema}.events (type, time);
CREATE INDEX events_subject ON {schema}.events (subject);
CREATE INDEX events_correlation ON {schema}.events (correlationid);
CREATE INDEX events_goal ON {schema}.events (goal_id);
CREATE INDEX events_principal ON {schema}.events (principal);
CREATE INDEX events_agent ON {schema}.events (agent, time);
CREATE INDEX events_time ON {schema}.events (time);
CREATE INDEX events_tags ON {schema}.events USING gin (tags);
CREATE INDEX events_tools ON {schema}.events USING gin (tools);
CREATE INDEX events_models ON {schema}.events USING gin (models);
"""

# "Which policy decisions let this action through": the decisions of the action's task, and the
# one its action.executed names.
_INDEXES_2 = """
CREATE INDEX IF NOT EXISTS events_task ON {schema}.events (task_id);
CREATE INDEX IF NOT EXISTS events_decision ON {schema}.events ((data->>'decision_id'))
    WHERE (data->>'decision_id') IS NOT NULL;
"""
#: Every index of the projection (what a bulk load builds afterwards).
INDEXES = _INDEXES_1 + _INDEXES_2

TREE = """
CREATE TABLE IF NOT EXISTS {schema}.tree (
    level smallint NOT NULL, idx bigint NOT NULL, hash bytea NOT NULL, PRIMARY KEY (level, idx)
);
CREATE TABLE IF NOT EXISTS {schema}.tree_checkpoints (
    tree_size bigint PRIMARY KEY,
    root      bytea NOT NULL,
    note      text  NOT NULL,
    signed_at timestamptz NOT NULL DEFAULT now(),
    log_seq   bigint
);
"""

# What a sender's CloudEvent carried besides AgentOS's own attributes (projector version 2).
_ENVELOPE_COLUMNS = """
ALTER TABLE {schema}.events ADD COLUMN IF NOT EXISTS datacontenttype text,
    ADD COLUMN IF NOT EXISTS dataschema text,
    ADD COLUMN IF NOT EXISTS extensions jsonb NOT NULL DEFAULT '{{}}',
    ADD COLUMN IF NOT EXISTS data_base64 text;
"""

MIGRATIONS = [TABLES + _INDEXES_1, _INDEXES_2, TREE, _ENVELOPE_COLUMNS]  # append-only: a shipped step is never edited
#: A bulk load's steps: the tables, its indexes left for afterwards (:data:`INDEXES`).
BULK_STEPS = [TABLES, "SELECT 1  -- the projection's indexes: built after the load", TREE, _ENVELOPE_COLUMNS]
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")
FIRST_MONTH, END_MONTH = (2000, 1), (2200, 1)


class Head(NamedTuple):
    """The last stream sequence the chain holds, its hash, and the Merkle tree up to it."""

    seq: int
    hash: bytes
    tree: Frontier = Frontier()


def check_schema(name: str) -> str:
    """A schema name safe to put in SQL text."""
    if not _NAME.match(name):
        raise ConfigError(f"audit schema {name!r} must match {_NAME.pattern}")
    return name


async def migrate_schema(pool: asyncpg.Pool, schema: str, *, indexes: bool = True) -> None:
    """Create or upgrade the schema (safe on every start); without ``indexes`` for a bulk rebuild."""
    await migrate(pool, check_schema(schema), MIGRATIONS if indexes else BULK_STEPS)


async def create_indexes(pool: asyncpg.Pool, schema: str) -> None:
    """Build the indexes a bulk load skipped."""
    async with pool.acquire() as conn:
        for statement in INDEXES.format(schema=check_schema(schema)).split(";"):
            if statement.strip():
                await conn.execute(statement)


def month_of(t: dt.datetime) -> tuple[int, int]:
    """(year, month) of a time, in UTC."""
    u = t.astimezone(dt.UTC)
    return u.year, u.month


def partition_sql(schema: str, month: tuple[int, int]) -> str | None:
    """DDL of one monthly partition, or None when the month belongs in the default partition."""
    if not FIRST_MONTH <= month < END_MONTH:
        return None
    year, mon = month
    nxt = (year + mon // 12, mon % 12 + 1)
    return (
        f"CREATE TABLE IF NOT EXISTS {schema}.events_y{year}m{mon:02d} PARTITION OF {schema}.events "
        f"FOR VALUES FROM ('{year:04d}-{mon:02d}-01 00:00:00+00') TO ('{nxt[0]:04d}-{nxt[1]:02d}-01 00:00:00+00')"
    )


class Partitions:
    """Creates the monthly partitions a batch needs, remembering which exist."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self.known: set[tuple[int, int]] = set()

    async def ensure(self, conn: Connection, times: Iterable[dt.datetime]) -> None:
        """Create the partitions of these times' months that do not exist yet."""
        for month in sorted({month_of(t) for t in times} - self.known):
            sql = partition_sql(self.schema, month)
            if sql is not None:
                with contextlib.suppress(asyncpg.DuplicateTableError):
                    await conn.execute(sql)
            self.known.add(month)


async def head(conn: Connection | asyncpg.Pool, schema: str) -> Head | None:
    """The chain's last row, or None while the chain is empty."""
    row = await conn.fetchrow(f"SELECT seq, hash FROM {schema}.chain ORDER BY seq DESC LIMIT 1")
    return None if row is None else Head(row["seq"], bytes(row["hash"]))


async def start_head(conn: Connection | asyncpg.Pool, schema: str, first_seq: int) -> Head:
    """Where the chain continues: its last row, or just before the stream's first message (the
    tree is not read: :func:`agentos_audit.tree.start_head` adds it)."""
    found = await head(conn, schema)
    return found if found is not None else Head(max(first_seq, 1) - 1, GENESIS)


async def read_meta(conn: Connection | asyncpg.Pool, schema: str) -> dict[str, str]:
    """The schema's ``meta`` table as a dict."""
    rows = await conn.fetch(f"SELECT key, value FROM {schema}.meta")
    return {r["key"]: r["value"] for r in rows}


async def write_meta(conn: Connection | asyncpg.Pool, schema: str, values: dict[str, str]) -> None:
    """Insert or update ``meta`` entries."""
    for key, value in values.items():
        await conn.execute(
            f"INSERT INTO {schema}.meta (key, value) VALUES ($1, $2) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            key,
            value,
        )


async def archive_schema(pool: asyncpg.Pool, schema: str, suffix: str) -> str:
    """Rename ``schema`` out of the way (kept as evidence, never dropped); returns the new name."""
    target = check_schema(f"{schema}_{re.sub(r'[^a-z0-9]', '', suffix.lower())}"[:41])
    async with pool.acquire() as conn:
        await conn.execute(f"ALTER SCHEMA {schema} RENAME TO {target}")
    return target


async def drop_schema(pool: asyncpg.Pool, schema: str) -> None:
    """Drop a schema and everything in it, if it exists."""
    async with pool.acquire() as conn:
        await conn.execute(f"DROP SCHEMA IF EXISTS {check_schema(schema)} CASCADE")


__all__ = [
    "BULK_STEPS",
    "INDEXES",
    "MIGRATIONS",
    "TABLES",
    "TREE",
    "Head",
    "Partitions",
    "archive_schema",
    "check_schema",
    "create_indexes",
    "drop_schema",
    "head",
    "migrate_schema",
    "month_of",
    "partition_sql",
    "read_meta",
    "start_head",
    "write_meta",
]
