"""`verify`: an untouched projection verifies; every kind of tampering in Postgres is detected and the
first divergence is named."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from agentos_audit.canonical import chain_step
from agentos_audit.projector import Projector
from agentos_audit.signing import Ed25519PrivateKey, Signer
from agentos_audit.verify import verify
from agentos_kernel import Bus
from agentos_kernel.testing import unique

from tests.audit.conftest import caught_up, publish_all
from tests.audit.workload import build

Tamper = Callable[[asyncpg.Pool, str, list[int]], Awaitable[tuple[str, int]]]


async def seeded(bus: Bus, pool: asyncpg.Pool, audit: Projector, tenant: str) -> list[int]:
    """Project a seeded goal, stop the projector; the goal's stream sequences."""
    await publish_all(bus, build(bus, tenant, unique("g")).events)
    await caught_up(bus, pool, audit.schema)
    await audit.stop()
    rows = await pool.fetch(f"SELECT seq FROM {audit.schema}.events WHERE tenant = $1 ORDER BY seq", tenant)
    return [r["seq"] for r in rows]


async def test_untouched_projection_verifies(
    bus: Bus, pool: asyncpg.Pool, audit: Projector, tenant: str, signer: Signer
) -> None:
    seqs = await seeded(bus, pool, audit, tenant)
    report = await verify(bus, pool, audit.schema, signer.public)
    assert report.ok, report.divergences
    assert (
        report.head_seq >= seqs[-1]
        and report.chain_rows
        == report.head_seq - (await pool.fetchval(f"SELECT min(seq) FROM {audit.schema}.chain")) + 1
    )
    assert report.events_checked >= len(seqs) and report.checkpoints_valid >= 1


async def modify_payload(pool: asyncpg.Pool, s: str, seqs: list[int]) -> tuple[str, int]:
    await pool.execute(
        f"UPDATE {s}.events SET data = jsonb_set(data, '{{output}}', '{{\"ok\": false}}') WHERE seq = $1", seqs[6]
    )
    return "modified", seqs[6]


async def modify_column(pool: asyncpg.Pool, s: str, seqs: list[int]) -> tuple[str, int]:
    await pool.execute(f"UPDATE {s}.events SET cost_usd = 0 WHERE seq = $1", seqs[10])
    return "modified", seqs[10]


async def modify_stored_bytes(pool: asyncpg.Pool, s: str, seqs: list[int]) -> tuple[str, int]:
    await pool.execute(
        f"UPDATE {s}.chain SET raw = convert_to(replace(convert_from(raw, 'UTF8'), 'Summarise',"
        " 'Summarize'), 'UTF8') WHERE seq = $1",
        seqs[0],
    )
    return "modified", seqs[0]


async def rewrite_chain(pool: asyncpg.Pool, s: str, seqs: list[int]) -> tuple[str, int]:
    """Modify stored bytes and recompute every later hash, as an attacker without the key would."""
    await modify_stored_bytes(pool, s, seqs)
    rows = await pool.fetch(f"SELECT seq, raw FROM {s}.chain WHERE seq >= $1 ORDER BY seq", seqs[0])
    prev = bytes(await pool.fetchval(f"SELECT hash FROM {s}.chain WHERE seq = $1", seqs[0] - 1) or bytes(32))
    for r in rows:
        prev = chain_step(prev, bytes(r["raw"]))
        await pool.execute(f"UPDATE {s}.chain SET hash = $2 WHERE seq = $1", r["seq"], prev)
    return "modified", seqs[0]


async def delete_event(pool: asyncpg.Pool, s: str, seqs: list[int]) -> tuple[str, int]:
    await pool.execute(f"DELETE FROM {s}.events WHERE seq = $1", seqs[3])
    return "deleted", seqs[3]


async def delete_chain_row(pool: asyncpg.Pool, s: str, seqs: list[int]) -> tuple[str, int]:
    await pool.execute(f"DELETE FROM {s}.events WHERE seq = $1", seqs[4])
    await pool.execute(f"DELETE FROM {s}.chain WHERE seq = $1", seqs[4])
    return "deleted", seqs[4]


async def insert_event(pool: asyncpg.Pool, s: str, seqs: list[int]) -> tuple[str, int]:
    await pool.execute(
        f"""INSERT INTO {s}.events SELECT seq, 'forged-' || id, type, source, subject, tenant,
        correlationid, causationid, principal, time, traceparent, trace_id, agent, task_id, goal_id, models, tools,
        cost_usd, tokens, tags, policy_version, data FROM {s}.events WHERE seq = $1""",
        seqs[6],
    )
    return "inserted", seqs[6]


async def reorder_events(pool: asyncpg.Pool, s: str, seqs: list[int]) -> tuple[str, int]:
    a, b = seqs[2], seqs[7]
    await pool.execute(f"UPDATE {s}.events SET seq = CASE seq WHEN $1 THEN $2 ELSE $1 END WHERE seq IN ($1, $2)", a, b)
    return "reordered", a


async def reorder_chain(pool: asyncpg.Pool, s: str, seqs: list[int]) -> tuple[str, int]:
    a, b = seqs[1], seqs[9]
    await pool.execute(
        f"""UPDATE {s}.chain c SET raw = o.raw, hash = o.hash
        FROM {s}.chain o WHERE c.seq IN ($1, $2) AND o.seq = CASE c.seq WHEN $1 THEN $2 ELSE $1 END""",
        a,
        b,
    )
    return "reordered", a


async def forge_checkpoint(pool: asyncpg.Pool, s: str, seqs: list[int]) -> tuple[str, int]:
    forger = Signer(Ed25519PrivateKey.generate())
    h = bytes(await pool.fetchval(f"SELECT hash FROM {s}.chain WHERE seq = $1", seqs[2]))
    meta = dict(await pool.fetch(f"SELECT key, value FROM {s}.meta"))
    cp = forger.sign("AGENTOS_EVENTS", meta["stream_created"], seqs[2], h)
    await pool.execute(
        f"INSERT INTO {s}.checkpoints VALUES ($1, $2, $3, $4, $5)", cp.seq, cp.hash, cp.key_id, cp.message, cp.signature
    )
    return "forged_checkpoint", seqs[2]


async def alter_checkpoint(pool: asyncpg.Pool, s: str, seqs: list[int]) -> tuple[str, int]:
    seq = await pool.fetchval(f"SELECT max(seq) FROM {s}.checkpoints")
    await pool.execute(f"UPDATE {s}.checkpoints SET hash = $2 WHERE seq = $1", seq, bytes(32))
    return "forged_checkpoint", seq


@pytest.mark.parametrize(
    "tamper",
    [
        modify_payload,
        modify_column,
        modify_stored_bytes,
        rewrite_chain,
        delete_event,
        delete_chain_row,
        insert_event,
        reorder_events,
        reorder_chain,
        forge_checkpoint,
        alter_checkpoint,
    ],
    ids=lambda f: f.__name__,
)
async def test_tampering_is_detected_and_named(
    bus: Bus, pool: asyncpg.Pool, audit: Projector, tenant: str, signer: Signer, tamper: Tamper
) -> None:
    seqs = await seeded(bus, pool, audit, tenant)
    kind, seq = await tamper(pool, audit.schema, seqs)
    report = await verify(bus, pool, audit.schema, signer.public)
    first: Any = report.first
    assert not report.ok and first is not None, "tampering goes unnoticed"
    assert (first.kind, first.seq) == (kind, seq), report.divergences
