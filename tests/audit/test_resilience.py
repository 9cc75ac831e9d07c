"""The projector's position is the chain head in Postgres: restarts, a durable consumer that moved on
without it, two replicas, and a log that was recreated all leave a correct, verifiable chain."""

from __future__ import annotations

import asyncpg
from agentos_audit.classify import classify
from agentos_audit.lifecycle import adopt_stream
from agentos_audit.projector import Projector
from agentos_audit.schema import drop_schema, read_meta, write_meta
from agentos_audit.signing import Signer
from agentos_audit.verify import verify
from agentos_kernel import Bus
from agentos_kernel.testing import unique

from tests.audit.conftest import caught_up, publish_all
from tests.audit.workload import build


def twin(audit: Projector, signer: Signer) -> Projector:
    return Projector(
        audit.bus,
        audit.pool,
        schema=audit.schema,
        durable=audit.durable,
        signer=signer,
        batch=8,
        checkpoint_every=200,
        checkpoint_idle_s=0.5,
    )


async def test_restart_resumes_even_when_the_durable_moved_on(
    bus: Bus, pool: asyncpg.Pool, audit: Projector, tenant: str, signer: Signer
) -> None:
    await caught_up(bus, pool, audit.schema)
    await audit.stop()
    w = build(bus, tenant, unique("g"))
    await publish_all(bus, w.events)
    psub = await bus.js.pull_subscribe_bind(audit.durable, "AGENTOS_EVENTS")
    msgs = await psub.fetch(100, timeout=2)
    await msgs[-1].ack_sync()  # AckPolicy.ALL: the durable now believes all of them are done
    await psub.unsubscribe()
    again = await twin(audit, signer).start()
    try:
        await caught_up(bus, pool, audit.schema)
    finally:
        await again.stop()
    ids = {r["id"] for r in await pool.fetch(f"SELECT id FROM {audit.schema}.events WHERE tenant = $1", tenant)}
    assert ids == {e.id for e in w.events}
    report = await verify(bus, pool, audit.schema, signer.public)
    assert report.ok, report.divergences


async def test_two_replicas_share_one_writer(
    bus: Bus, pool: asyncpg.Pool, audit: Projector, tenant: str, signer: Signer
) -> None:
    second = await twin(audit, signer).start()
    try:
        for _ in range(3):
            await publish_all(bus, build(bus, tenant, unique("g")).events)
        await caught_up(bus, pool, audit.schema)
        await audit.stop()  # the leader goes away: the standby takes over
        await publish_all(bus, build(bus, tenant, unique("g")).events)
        await caught_up(bus, pool, audit.schema)
    finally:
        await second.stop()
    assert await pool.fetchval(f"SELECT count(*) FROM {audit.schema}.events WHERE tenant = $1", tenant) == 4 * 13
    report = await verify(bus, pool, audit.schema, signer.public)
    assert report.ok, report.divergences


async def test_projection_of_another_stream_is_kept_aside(pool: asyncpg.Pool, audit: Projector) -> None:
    await audit.stop()
    meta = await read_meta(pool, audit.schema)
    await write_meta(pool, audit.schema, {"stream_created": "2001-01-01T00:00:00+00:00"})
    await adopt_stream(pool, audit.schema, meta["stream_created"])
    moved = await pool.fetch("SELECT nspname FROM pg_namespace WHERE nspname LIKE $1", f"{audit.schema}_old%")
    assert len(moved) == 1
    assert await pool.fetchval(f"SELECT count(*) FROM {audit.schema}.chain") == 0
    assert (await read_meta(pool, audit.schema))["stream_created"] == meta["stream_created"]
    await drop_schema(pool, moved[0]["nspname"])


def test_classifier_finds_personal_data_and_leaves_ids_alone() -> None:
    assert classify('{"text": "mail jane.doe@example.com"}') == ["personal_data", "pii:email"]
    assert classify('{"text": "call +44 20 7946 0958"}') == ["personal_data", "pii:phone"]
    assert classify('{"text": "(415) 555-0100"}') == ["personal_data", "pii:phone"]
    assert classify('{"card": "4111 1111 1111 1111"}') == ["personal_data", "pii:card"]
    assert classify('{"requester_email": "x"}') == ["personal_data", "pii:declared"]
    assert classify('{"tags": ["pii"]}') == ["personal_data", "pii:declared"]
    assert classify('{"text": "see [EMAIL] or [SECRET]"}') == ["personal_data", "pii:email", "redacted", "secret"]
    clean = (
        '{"id": "01a20b8f-b03f-762d-a890-d5caf827dd6e", "ts": 1732400000000, "cost_usd": 0.0012, '
        '"day": "2026-11-24", "task_id": "g1/0/research/1", "charter": "writer@2", "n": 4111111111111112}'
    )
    assert classify(clean) == []
