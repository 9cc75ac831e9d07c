"""`verify`: an untouched projection verifies; every kind of tampering in Postgres is detected and the
first divergence is named."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from agentos_audit import tree
from agentos_audit.canonical import chain_step
from agentos_audit.projector import Projector
from agentos_audit.publish import witness_line
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


async def base_of(pool: asyncpg.Pool, s: str) -> int:
    return int(await pool.fetchval(f"SELECT value FROM {s}.meta WHERE key = 'tree_base'"))


async def forge_checkpoint(pool: asyncpg.Pool, s: str, seqs: list[int]) -> tuple[str, int]:
    """A checkpoint signed by another key, of the genuine tree at that size."""
    forger = Signer(Ed25519PrivateKey.generate())
    base = await base_of(pool, s)
    size = seqs[2] - base + 1
    root = await tree.root_at(pool, s, size)
    note = forger.note("agentos.local/audit", size, root)
    await pool.execute(
        f"INSERT INTO {s}.tree_checkpoints (tree_size, root, note) VALUES ($1, $2, $3)", size, root, note
    )
    return "forged_checkpoint", seqs[2]


async def alter_checkpoint(pool: asyncpg.Pool, s: str, seqs: list[int]) -> tuple[str, int]:
    size = await pool.fetchval(f"SELECT max(tree_size) FROM {s}.tree_checkpoints")
    await pool.execute(f"UPDATE {s}.tree_checkpoints SET root = $2 WHERE tree_size = $1", size, bytes(32))
    return "forged_checkpoint", await base_of(pool, s) + size - 1


async def delete_tail(pool: asyncpg.Pool, s: str, seqs: list[int]) -> tuple[str, int]:
    """The last rows of the chain, their events and tree nodes: what a checkpoint covers."""
    hi = await pool.fetchval(f"SELECT max(seq) FROM {s}.chain")
    base = await base_of(pool, s)
    await pool.execute(f"DELETE FROM {s}.events WHERE seq > $1", hi - 5)
    await pool.execute(f"DELETE FROM {s}.chain WHERE seq > $1", hi - 5)
    await pool.execute(f"DELETE FROM {s}.tree WHERE ((idx + 1) << level) > $1", hi - 5 - base + 1)
    return "deleted", hi - 4


async def delete_tail_and_its_checkpoints(pool: asyncpg.Pool, s: str, seqs: list[int]) -> tuple[str, int]:
    """…and every checkpoint in Postgres that covers it: the log's and the witness's copies remain."""
    kind, seq = await delete_tail(pool, s, seqs)
    await pool.execute(f"DELETE FROM {s}.tree_checkpoints WHERE tree_size > $1", seq - await base_of(pool, s))
    return kind, seq


async def delete_checkpoint(pool: asyncpg.Pool, s: str, seqs: list[int]) -> tuple[str, int]:
    """A checkpoint Postgres held, which the log holds too: named by its seq in the log."""
    row = await pool.fetchrow(f"SELECT tree_size, log_seq FROM {s}.tree_checkpoints ORDER BY tree_size LIMIT 1")
    assert row is not None and row["log_seq"] is not None
    await pool.execute(f"DELETE FROM {s}.tree_checkpoints WHERE tree_size = $1", row["tree_size"])
    return "deleted", row["log_seq"]


async def delete_first_rows(pool: asyncpg.Pool, s: str, seqs: list[int]) -> tuple[str, int]:
    base = await base_of(pool, s)
    await pool.execute(f"DELETE FROM {s}.events WHERE seq <= $1", base + 1)
    await pool.execute(f"DELETE FROM {s}.chain WHERE seq <= $1", base + 1)
    return "deleted", base


async def relabel_kind(pool: asyncpg.Pool, s: str, seqs: list[int]) -> tuple[str, int]:
    """An event relabelled a rejected message (and its row removed), as if it had never been valid."""
    await pool.execute(f"DELETE FROM {s}.events WHERE seq = $1", seqs[5])
    await pool.execute(
        f"UPDATE {s}.chain SET kind = 'rejected', code = 'schema', reason = 'invalid' WHERE seq = $1", seqs[5]
    )
    return "modified", seqs[5]


async def relabel_duplicate(pool: asyncpg.Pool, s: str, seqs: list[int]) -> tuple[str, int]:
    await pool.execute(f"UPDATE {s}.chain SET kind = 'duplicate' WHERE seq = $1", seqs[8])
    return "modified", seqs[8]


def column_edit(column: str, value: str) -> Tamper:
    async def edit(pool: asyncpg.Pool, s: str, seqs: list[int]) -> tuple[str, int]:
        await pool.execute(f"UPDATE {s}.events SET {column} = {value} WHERE seq = $1", seqs[9])
        return "modified", seqs[9]

    edit.__name__ = f"edit_{column}"
    return edit


async def modify_tree_node(pool: asyncpg.Pool, s: str, seqs: list[int]) -> tuple[str, int]:
    idx = seqs[3] - await base_of(pool, s)
    await pool.execute(f"UPDATE {s}.tree SET hash = $2 WHERE level = 0 AND idx = $1", idx, bytes(32))
    return "modified", seqs[3]


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
        delete_tail,
        delete_tail_and_its_checkpoints,
        delete_checkpoint,
        delete_first_rows,
        relabel_kind,
        relabel_duplicate,
        column_edit("type", "'dev.agentos.goal.completed.v1'"),
        column_edit("subject", "'someone-else'"),
        column_edit("time", "time - interval '1 day'"),
        column_edit("tenant", "'other-tenant'"),
        modify_tree_node,
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
    assert not [d for d in report.divergences if d.kind == "stale"], "tampering is never called stale"
    forged = {d.detail for d in report.divergences if d.kind == "forged_checkpoint"}
    assert report.checkpoints_valid <= report.checkpoints - len(forged), "a forged checkpoint counted as valid"


async def test_the_witness_file_is_checked(
    bus: Bus, pool: asyncpg.Pool, audit: Projector, tenant: str, signer: Signer, witness_file: Path
) -> None:
    seqs = await seeded(bus, pool, audit, tenant)
    s = audit.schema
    lines = witness_file.read_text().splitlines()
    assert lines, "every checkpoint is handed to the witness"
    report = await verify(bus, pool, s, signer.public, witness=witness_file)
    assert report.ok and report.checkpoints_valid == report.checkpoints, report.divergences

    base = await base_of(pool, s)
    size = seqs[4] - base + 1
    forged = Signer(Ed25519PrivateKey.generate()).note("agentos.local/audit", size, await tree.root_at(pool, s, size))
    witness_file.write_text("\n".join(lines) + "\n" + witness_line(size, forged))
    report = await verify(bus, pool, s, signer.public, witness=witness_file)
    first: Any = report.first
    assert (first.kind, first.seq, first.where) == ("forged_checkpoint", seqs[4], "witness"), report.divergences
    assert report.checkpoints_valid == report.checkpoints - 1

    witness_file.write_text("\n".join(lines) + "\n")  # the witness holds what Postgres no longer does
    await pool.execute(f"DELETE FROM {s}.tree_checkpoints")
    report = await verify(bus, pool, s, signer.public, witness=witness_file)
    assert {(d.kind, d.where) for d in report.divergences} == {("deleted", "checkpoints")}, report.divergences
    assert any("witness line 1" in d.detail for d in report.divergences)
