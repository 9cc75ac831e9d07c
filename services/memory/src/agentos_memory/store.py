"""The memory service's Postgres schema ``memory``: migrations, writes, reviews and search.

Every write function takes a connection so a handler can run it in the same transaction as
its :func:`agentos_kernel.db.first_time` record.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
from agentos_kernel.db import Connection, migrate
from agentos_schemas.rpc import MemoryEntry, MemorySearch

from agentos_memory.logic import (
    ALWAYS_FLOOR,
    ALWAYS_TAG,
    ANY_TENANT,
    DEDUP_REVIEWER,
    EntryRow,
    Review,
    or_query,
)

SCHEMA = "memory"
S = SCHEMA

MIGRATIONS = [
    # Generated columns need immutable expressions; array_to_string is only stable.
    """
    CREATE FUNCTION {schema}.tags_text(text[]) RETURNS text
        LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT coalesce(array_to_string($1, ' '), '') $$;
    CREATE TABLE {schema}.entries (
        id          text PRIMARY KEY,
        tenant      text NOT NULL,
        kind        text NOT NULL CHECK (kind IN ('working', 'episodic', 'semantic')),
        content     text NOT NULL,
        tags        text[] NOT NULL DEFAULT '{{}}',
        agent       text,
        goal_id     text,
        task_id     text,
        step_id     text,
        event_id    text,
        source      text,
        status      text NOT NULL CHECK (status IN ('proposed', 'committed', 'rejected')),
        reviewer    text,
        created_at  timestamptz NOT NULL DEFAULT now(),
        reviewed_at timestamptz,
        tsv         tsvector GENERATED ALWAYS AS (
            setweight(to_tsvector('english', {schema}.tags_text(tags)), 'B')
            || to_tsvector('english', content)) STORED
    );
    CREATE INDEX entries_tsv ON {schema}.entries USING gin (tsv);
    CREATE INDEX entries_scope ON {schema}.entries (tenant, kind, status);
    CREATE INDEX entries_goal ON {schema}.entries (goal_id);
    CREATE INDEX entries_task ON {schema}.entries (tenant, task_id);
    """,
    # The latest QA verdict per task, so a proposal that arrives after its review still gets it.
    """
    CREATE TABLE {schema}.task_reviews (
        tenant      text NOT NULL,
        task_id     text NOT NULL,
        status      text NOT NULL CHECK (status IN ('committed', 'rejected')),
        reviewer    text NOT NULL,
        event_id    text NOT NULL,
        reviewed_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (tenant, task_id)
    );
    """,
    # Duplicates: the content's key (case, punctuation and spacing ignored) to find a committed
    # twin, and, on an entry refused as one, which entry it duplicates and why.
    """
    ALTER TABLE {schema}.entries
        ADD COLUMN content_key text GENERATED ALWAYS AS (btrim(regexp_replace(regexp_replace(
            lower(content), '[^[:alnum:][:space:]_]+', ' ', 'g'), '[[:space:]]+', ' ', 'g'))) STORED,
        ADD COLUMN duplicate_of text,
        ADD COLUMN refusal text;
    CREATE INDEX entries_key ON {schema}.entries (tenant, kind, content_key) WHERE status = 'committed';
    """,
]

_COLUMNS = (
    "id, tenant, kind, content, tags, agent, goal_id, task_id, step_id, event_id, source, "
    "status, reviewer, created_at, duplicate_of, refusal, reviewed_at"
)
_INSERT = f"""
    INSERT INTO {S}.entries ({_COLUMNS})
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, coalesce($14, now()), $15, $16,
            CASE WHEN $13::text IS NULL THEN NULL ELSE now() END)"""
_REVIVE = """
    ON CONFLICT (id) DO UPDATE SET status = excluded.status, reviewer = excluded.reviewer,
        task_id = excluded.task_id, step_id = excluded.step_id, event_id = excluded.event_id,
        duplicate_of = excluded.duplicate_of, refusal = excluded.refusal, reviewed_at = excluded.reviewed_at
    WHERE entries.status = 'rejected' AND entries.task_id IS DISTINCT FROM excluded.task_id"""
_SEMANTIC_UPDATE = """
    ON CONFLICT (id) DO UPDATE SET content = excluded.content, tags = excluded.tags,
        tenant = excluded.tenant, source = excluded.source, status = excluded.status,
        reviewer = excluded.reviewer, reviewed_at = now()
    WHERE (entries.content, entries.tags, entries.tenant, entries.status)
        IS DISTINCT FROM (excluded.content, excluded.tags, excluded.tenant, excluded.status)"""

_RESULT = "e.id, e.kind, e.content, e.tags, e.agent, e.goal_id, e.task_id, e.event_id, e.source, e.created_at"
_MATCHES = f"""
    SELECT {_RESULT}, ts_rank_cd(e.tsv, q, 1)::float8 AS score
    FROM {S}.entries e, websearch_to_tsquery('english', $2) q
    WHERE e.tsv @@ q AND e.status = 'committed' AND e.kind = ANY($3::text[])
      AND ((e.kind = 'working' AND e.tenant = $1 AND e.goal_id = $4)
           OR (e.kind <> 'working' AND e.tenant IN ($1, '{ANY_TENANT}')))
    ORDER BY score DESC, e.created_at DESC, e.id LIMIT $5"""
_PINNED = f"""
    SELECT {_RESULT}, greatest(ts_rank_cd(e.tsv, q, 1)::float8, $3::float8) AS score
    FROM {S}.entries e, websearch_to_tsquery('english', $2) q
    WHERE e.kind = 'semantic' AND e.status = 'committed' AND '{ALWAYS_TAG}' = ANY(e.tags)
      AND e.tenant IN ($1, '{ANY_TENANT}')
    ORDER BY score DESC, e.created_at DESC, e.id LIMIT $4"""


_KEY = (
    "btrim(regexp_replace(regexp_replace(lower($2::text), '[^[:alnum:][:space:]_]+', ' ', 'g'), "
    "'[[:space:]]+', ' ', 'g'))"
)
_TWINS = f"""
    SELECT id, content FROM (
        (SELECT id, content, 2.0::float8 AS score FROM {S}.entries
         WHERE tenant = ANY($1::text[]) AND kind = $3 AND status = 'committed' AND content_key = {_KEY}
           AND id <> $4 LIMIT 1)
        UNION ALL
        (SELECT e.id, e.content, ts_rank_cd(e.tsv, q, 1)::float8 FROM {S}.entries e,
                websearch_to_tsquery('english', $5) q
         WHERE e.tenant = ANY($1::text[]) AND e.kind = $3 AND e.status = 'committed' AND e.tsv @@ q
           AND e.id <> $4 ORDER BY 3 DESC LIMIT $6)) twins
    ORDER BY score DESC, id"""


async def migrate_schema(pool: asyncpg.Pool) -> None:
    """Create or upgrade the ``memory`` schema (safe to run on every start, by every replica)."""
    await migrate(pool, SCHEMA, MIGRATIONS)


def _values(row: EntryRow) -> tuple[object, ...]:
    return (
        row.id,
        row.tenant,
        row.kind,
        row.content,
        list(row.tags),
        row.agent,
        row.goal_id,
        row.task_id,
        row.step_id,
        row.event_id,
        row.source,
        row.status,
        row.reviewer,
        row.created_at,
        row.duplicate_of,
        row.refusal,
    )


async def insert_entry(conn: Connection, row: EntryRow) -> bool:
    """Insert ``row`` unless an entry with its id exists; True if it was inserted."""
    inserted = await conn.fetchval(_INSERT + " ON CONFLICT (id) DO NOTHING RETURNING true", *_values(row))
    return bool(inserted)


async def propose_entry(conn: Connection, row: EntryRow) -> bool:
    """Insert a proposal; a proposal of an entry that exists is a no-op unless that entry was
    rejected and this is another task's proposal of it (a retried step proposing the finding
    again), which takes it over. True if anything was written."""
    written = await conn.fetchval(_INSERT + _REVIVE + " RETURNING true", *_values(row))
    return bool(written)


async def upsert_curated(conn: Connection, row: EntryRow) -> bool:
    """Insert or update a curated entry; True if anything changed."""
    changed = await conn.fetchval(_INSERT + _SEMANTIC_UPDATE + " RETURNING true", *_values(row))
    return bool(changed)


async def committed_twins(conn: Connection, row: EntryRow, limit: int = 5) -> list[tuple[str, str]]:
    """Committed entries of ``row``'s kind (its tenant's and every tenant's) that may duplicate it:
    one with the same content key, then the store's best full-text matches; ``(id, content)``.

    Takes the tenant's duplicate lock first, so two proposals of one finding checked at the same
    moment (two goals, two replicas) cannot both miss the other's commit."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('agentos-memory-dedup'), hashtext($1))", row.tenant)
    rows = await conn.fetch(
        _TWINS, [row.tenant, ANY_TENANT], row.content, row.kind, row.id, or_query(row.content), limit
    )
    return [(r["id"], r["content"]) for r in rows]


async def proposed_entries(conn: Connection, tenant: str, task_id: str) -> list[EntryRow]:
    """The still-proposed, non-working entries of one task."""
    rows = await conn.fetch(
        f"""SELECT id, tenant, kind, content, tags FROM {S}.entries
            WHERE tenant = $1 AND task_id = $2 AND status = 'proposed' AND kind <> 'working' ORDER BY id""",
        tenant,
        task_id,
    )
    return [
        EntryRow(
            id=r["id"],
            tenant=r["tenant"],
            kind=r["kind"],
            content=r["content"],
            status="proposed",
            tags=tuple(r["tags"]),
        )
        for r in rows
    ]


async def refuse_entry(conn: Connection, tenant: str, entry_id: str, of: str, reason: str) -> None:
    """Mark a proposed entry refused as a duplicate of ``of``, with the reason."""
    await conn.execute(
        f"""UPDATE {S}.entries SET status = 'rejected', reviewer = '{DEDUP_REVIEWER}', duplicate_of = $3,
                refusal = $4, reviewed_at = now() WHERE tenant = $1 AND id = $2 AND status = 'proposed'""",
        tenant,
        entry_id,
        of,
        reason,
    )


async def lock_task(conn: Connection, tenant: str, task_id: str) -> None:
    """Serialise the writes concerning one task until the transaction ends.

    A review and a proposal of the same task handled at the same moment (two replicas, or
    concurrent handlers) would otherwise each miss the other's uncommitted row.
    """
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('agentos-memory'), hashtext($1))", f"{tenant}/{task_id}")


async def record_task_review(conn: Connection, tenant: str, task_id: str, review: Review, event_id: str) -> None:
    """Remember the latest verdict on a task, for proposals that arrive after it."""
    await conn.execute(
        f"""INSERT INTO {S}.task_reviews (tenant, task_id, status, reviewer, event_id)
            VALUES ($1, $2, $3, $4, $5)
            ON CONFLICT (tenant, task_id) DO UPDATE SET status = excluded.status,
                reviewer = excluded.reviewer, event_id = excluded.event_id, reviewed_at = now()""",
        tenant,
        task_id,
        review.status,
        review.reviewer,
        event_id,
    )


async def task_review(conn: Connection, tenant: str, task_id: str) -> Review | None:
    """The latest verdict on a task, if it has been reviewed."""
    row = await conn.fetchrow(
        f"SELECT status, reviewer FROM {S}.task_reviews WHERE tenant = $1 AND task_id = $2", tenant, task_id
    )
    return None if row is None else Review(row["status"], row["reviewer"])


async def review_task_entries(conn: Connection, tenant: str, task_id: str, review: Review) -> list[str]:
    """Apply a task's verdict to its proposals; a rejection also rejects its working memory.

    Returns the ids whose status changed.
    """
    rows = await conn.fetch(
        f"""UPDATE {S}.entries SET status = $3, reviewer = $4, reviewed_at = now()
            WHERE tenant = $1 AND task_id = $2
              AND (status = 'proposed' OR ($3 = 'rejected' AND kind = 'working' AND status = 'committed'))
            RETURNING id""",
        tenant,
        task_id,
        review.status,
        review.reviewer,
    )
    return sorted(r["id"] for r in rows)


async def review_entries(conn: Connection, tenant: str, ids: Sequence[str], review: Review) -> list[str]:
    """Apply a verdict to the tenant's still-proposed entries among ``ids``; returns those changed."""
    rows = await conn.fetch(
        f"""UPDATE {S}.entries SET status = $3, reviewer = $4, reviewed_at = now()
            WHERE tenant = $1 AND id = ANY($2::text[]) AND status = 'proposed' RETURNING id""",
        tenant,
        list(ids),
        review.status,
        review.reviewer,
    )
    return sorted(r["id"] for r in rows)


def _entry(row: asyncpg.Record) -> MemoryEntry:
    return MemoryEntry(
        id=row["id"],
        kind=row["kind"],
        content=row["content"],
        tags=tuple(row["tags"]),
        score=float(row["score"]),
        agent=row["agent"],
        goal_id=row["goal_id"],
        task_id=row["task_id"],
        event_id=row["event_id"],
        source=row["source"],
        created_at=row["created_at"],
    )


async def search(pool: asyncpg.Pool, request: MemorySearch) -> tuple[list[MemoryEntry], list[MemoryEntry]]:
    """Committed entries for ``request``: (``always`` entries, best matches), each best first.

    :func:`agentos_memory.logic.pick` merges the two lists into the answer.
    """
    if request.k == 0:
        return [], []
    words = or_query(request.query)
    async with pool.acquire() as conn:
        pinned: list[asyncpg.Record] = []
        if "semantic" in request.kinds:
            pinned = await conn.fetch(_PINNED, request.tenant, words, ALWAYS_FLOOR, request.k)
        matched: list[asyncpg.Record] = []
        if words:
            matched = await conn.fetch(_MATCHES, request.tenant, words, list(request.kinds), request.goal_id, request.k)
    return [_entry(r) for r in pinned], [_entry(r) for r in matched]
