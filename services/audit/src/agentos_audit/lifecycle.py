"""Putting a schema in place: migrations, views, grants, and binding it to one stream."""

from __future__ import annotations

import datetime as dt
import logging

import asyncpg
from agentos_schemas import EVENTS_STREAM

from agentos_audit import schema as sch
from agentos_audit.derive import PROJECTOR_VERSION
from agentos_audit.views import create_views, grant_analyst

log = logging.getLogger("agentos.audit")


async def ensure_schema(pool: asyncpg.Pool, schema: str) -> None:
    """Migrate the schema, (re)create its views and the analyst role's grants. One replica at a
    time: replicas starting together deadlocked, one granting on the views another was replacing."""
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock(hashtext($1))", f"agentos-audit-ensure-{schema}")
        try:
            await sch.migrate_schema(pool, schema)
            await create_views(pool, schema)
            await grant_analyst(pool, schema)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(hashtext($1))", f"agentos-audit-ensure-{schema}")


async def adopt_stream(pool: asyncpg.Pool, schema: str, stream_created: str) -> None:
    """Bind the schema to this stream. A projection of another stream (a log that was recreated)
    is renamed ``<schema>_old<stamp>`` and kept, and a fresh schema is started."""
    meta = await sch.read_meta(pool, schema)
    previous = meta.get("stream_created")
    if previous is not None and previous != stream_created:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S")
        moved = await sch.archive_schema(pool, schema, f"old{stamp}")
        log.warning(
            "audit: %s projected another stream (created %s, now %s); kept it as %s",
            schema,
            previous,
            stream_created,
            moved,
        )
        await ensure_schema(pool, schema)
    elif previous is not None and meta.get("projector_version") != PROJECTOR_VERSION:
        log.warning(
            "audit: %s was projected by projector version %s (now %s): run `agentos audit rebuild`",
            schema,
            meta.get("projector_version"),
            PROJECTOR_VERSION,
        )
        return
    elif previous is not None:
        return
    await sch.write_meta(
        pool,
        schema,
        {"stream": EVENTS_STREAM, "stream_created": stream_created, "projector_version": PROJECTOR_VERSION},
    )


__all__ = ["adopt_stream", "ensure_schema"]
