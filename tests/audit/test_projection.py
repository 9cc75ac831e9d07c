"""The projection: every event in stream order into `events` and the chain, idempotent on event id,
malformed messages chained as rejected and dead-lettered without stopping the projector."""

from __future__ import annotations

import json
from collections import Counter

import asyncpg
import nats.errors
from agentos_audit.canonical import GENESIS, chain_step
from agentos_audit.projector import Projector
from agentos_audit.signing import Signer
from agentos_kernel import Bus
from agentos_kernel.testing import unique
from agentos_schemas import DLQ_STREAM, codec, dlq_subject, event_subject
from agentos_schemas.events import GoalSubmitted

from tests.audit.conftest import caught_up, publish_all
from tests.audit.workload import TRACE_ID, build


async def test_seeded_workload_is_projected_with_its_columns(
    bus: Bus, pool: asyncpg.Pool, audit: Projector, tenant: str
) -> None:
    w = build(bus, tenant, unique("g"))
    await publish_all(bus, w.events)
    await caught_up(bus, pool, audit.schema)
    rows = await pool.fetch(f"SELECT * FROM {audit.schema}.events WHERE tenant = $1 ORDER BY seq", tenant)
    assert [r["id"] for r in rows] == [e.id for e in w.events]
    by_type = {r["type"].split(".")[2] + "." + r["type"].split(".")[3]: r for r in rows}
    done = [r for r in rows if r["type"] == "dev.agentos.task.completed.v1"]
    assert done[0]["agent"] == "research" and done[0]["models"] == ["backup", "smart"]
    assert abs(done[0]["cost_usd"] - 0.025) < 1e-12 and done[0]["tokens"] == 1550
    ctx = [r for r in rows if r["type"] == "dev.agentos.context.ready.v1"]
    assert ctx[0]["tools"] == ["web_search"] and "pii:phone" in ctx[0]["tags"] and "personal_data" in ctx[0]["tags"]
    assert ctx[1]["tags"] == []
    assert "pii:email" in by_type["goal.submitted"]["tags"]
    assert all(r["trace_id"] == TRACE_ID and r["correlationid"] == w.goal_id for r in rows)
    assert by_type["goal.planned"]["goal_id"] == w.goal_id and by_type["goal.planned"]["models"] == ["fast"]
    seqs = [r["seq"] for r in rows]
    chain = await pool.fetch(
        f"SELECT seq, kind, event_id FROM {audit.schema}.chain WHERE seq = ANY($1::bigint[])", seqs
    )
    assert {r["seq"]: r["event_id"] for r in chain} == {r["seq"]: r["id"] for r in rows}
    parts = await pool.fetchval(
        "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname LIKE 'events_y%'",
        audit.schema,
    )
    assert parts >= 1, "a monthly partition was created on demand"


async def test_chain_is_contiguous_and_hashes_the_stored_bytes(bus: Bus, pool: asyncpg.Pool, audit: Projector) -> None:
    last = await caught_up(bus, pool, audit.schema)
    # (up to the log's end when caught up: the projector's own checkpoint events may follow)
    rows = await pool.fetch(f"SELECT seq, raw, hash FROM {audit.schema}.chain WHERE seq <= $1 ORDER BY seq", last)
    assert [r["seq"] for r in rows] == list(range(rows[0]["seq"], last + 1))
    prev = GENESIS
    for r in rows:
        prev = chain_step(prev, bytes(r["raw"]))
        assert prev == bytes(r["hash"])
    stored = await bus.js.get_msg("AGENTOS_EVENTS", last)
    assert bytes(rows[-1]["raw"]) == stored.data


async def test_same_event_id_stored_twice_is_projected_once(
    bus: Bus, pool: asyncpg.Pool, audit: Projector, tenant: str
) -> None:
    event = bus.new(GoalSubmitted(goal_id=unique("g"), text="twice"), tenant=tenant)
    subject, body = event_subject(tenant, event.type), codec.encode(event)
    for n in range(2):  # distinct Nats-Msg-Id: JetStream stores both copies
        await bus.publish_raw(subject, body, {**codec.headers_for(event), "Nats-Msg-Id": f"{event.id}-{n}"})
    await caught_up(bus, pool, audit.schema)
    kinds = await pool.fetch(f"SELECT kind FROM {audit.schema}.chain WHERE event_id = $1 ORDER BY seq", event.id)
    assert [k["kind"] for k in kinds] == ["event", "duplicate"]
    assert await pool.fetchval(f"SELECT count(*) FROM {audit.schema}.events WHERE id = $1", event.id) == 1


async def dlq_codes(bus: Bus, durable: str) -> Counter[str]:
    codes: Counter[str] = Counter()
    sub = await bus.js.subscribe(dlq_subject(durable), stream=DLQ_STREAM, ordered_consumer=True)
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=1.0)
            except (TimeoutError, nats.errors.TimeoutError):
                break
            codes[(msg.headers or {})["AgentOS-DLQ-Code"]] += 1
    finally:
        await sub.unsubscribe()
    return codes


async def test_malformed_events_are_chained_dead_lettered_and_do_not_stop_it(
    bus: Bus, pool: asyncpg.Pool, audit: Projector, tenant: str
) -> None:
    base = f'"specversion":"1.0","source":"fuzz","tenant":"{tenant}"'
    bad = [
        f"<xml>not a cloudevent {tenant}</xml>".encode(),
        ("{" + base + f',"id":"{unique("b")}","type":"dev.agentos.goal.teleported.v1","data":{{}}}}').encode(),
        (
            "{" + base + f',"id":"{unique("b")}","type":"dev.agentos.goal.submitted.v1","data":{{"goal_id":1}}}}'
        ).encode(),
    ]
    for body in bad:
        await bus.publish_raw(f"agentos.{tenant}.goal.submitted", body, {"Nats-Msg-Id": unique("m")})
    good = bus.new(GoalSubmitted(goal_id=unique("g"), text="after the bad ones"), tenant=tenant)
    await bus.publish(good)
    await caught_up(bus, pool, audit.schema)
    assert await pool.fetchval(f"SELECT count(*) FROM {audit.schema}.events WHERE id = $1", good.id) == 1
    rejected = await pool.fetch(
        f"SELECT code, raw FROM {audit.schema}.chain WHERE kind = 'rejected' AND raw = ANY($1::bytea[])", bad
    )
    assert sorted(r["code"] for r in rejected) == ["not_cloudevent", "schema", "unknown_type"]
    codes = await dlq_codes(bus, audit.durable)
    assert codes["not_cloudevent"] >= 1 and codes["schema"] >= 1 and codes["unknown_type"] >= 1


async def test_checkpoints_are_signed_published_and_one_is_written_on_stop(
    bus: Bus, pool: asyncpg.Pool, audit: Projector, signer: Signer, tenant: str
) -> None:
    """Seeds 450 events (the session log may hold nothing else). A checkpoint is signed in the
    transaction of each batch that crosses a multiple of ``checkpoint_every`` (200) stream sequences,
    and stop signs the head, except when every entry after the newest checkpoint is one of the log's
    own checkpoint events (they never cause a checkpoint: checkpoints would beget checkpoints). So
    after stop, exactly: the newest checkpoint covers every entry but a tail of checkpoint events
    (possibly empty; a checkpoint event that joined a batch is covered like any entry). The idle
    timer is switched off so that the last few events are left for stop to sign."""
    import agentos_verify as v
    from agentos_audit.merkle import Frontier, leaf_hash
    from agentos_audit.signing import vkey
    from agentos_schemas.events.audit import AuditCheckpoint

    kind = AuditCheckpoint.ce_type()
    await bus.publish_many(
        [bus.new(GoalSubmitted(goal_id=unique("g"), text=f"n{n}"), tenant=tenant) for n in range(450)]
    )
    assert audit.checkpoints is not None
    audit.checkpoints.idle_s = 3600.0
    s = audit.schema
    while (await caught_up(bus, pool, s)) % 200 > 190:  # the tail below must not cross a multiple
        await bus.publish_many(
            [bus.new(GoalSubmitted(goal_id=unique("g"), text="x"), tenant=tenant) for _ in range(15)]
        )
    await bus.publish_many([bus.new(GoalSubmitted(goal_id=unique("g"), text="tail"), tenant=tenant) for _ in range(3)])
    await caught_up(bus, pool, s)
    seeded = await pool.fetchval(f"SELECT max(seq) FROM {s}.events WHERE tenant = $1", tenant)
    base = int(await pool.fetchval(f"SELECT value FROM {s}.meta WHERE key = 'tree_base'"))
    before = await pool.fetchval(f"SELECT max(tree_size) FROM {s}.tree_checkpoints")
    assert before is not None and base + before - 1 < seeded, "the tail is left for stop to sign"
    await audit.stop()
    rows = await pool.fetch(f"SELECT tree_size, root, note, log_seq FROM {s}.tree_checkpoints ORDER BY tree_size")
    chain = await pool.fetch(
        f"SELECT c.seq, c.raw, e.type FROM {s}.chain c LEFT JOIN {s}.events e ON e.seq = c.seq ORDER BY c.seq"
    )
    assert rows, "checkpoints were signed"
    signed_end = base + rows[-1]["tree_size"] - 1  # the stream seq of the newest checkpoint's last leaf
    assert signed_end <= chain[-1]["seq"]
    assert [r["type"] for r in chain if r["seq"] > signed_end] == [kind] * (chain[-1]["seq"] - signed_end), (
        "stop signed the head but for a tail of checkpoint events"
    )
    assert signed_end >= seeded, "stop signed the tail"
    ends = [base + r["tree_size"] - 1 for r in rows]
    for crossed in range(-(-base // 200) * 200, seeded + 1, 200):  # signed by the batch that crossed it
        assert any(crossed <= end < crossed + audit.batch * 4 for end in ends), (crossed, ends)
    raws = [bytes(r["raw"]) for r in chain]
    key = v.Verifier.parse(vkey("agentos.local/audit", signer.public))
    for r in rows:
        cp = v.open_checkpoint(r["note"], key, "agentos.local/audit")
        expected, _ = Frontier().extend(leaf_hash(x) for x in raws[: cp.size])
        assert cp.size == r["tree_size"] and cp.root == bytes(r["root"]) == expected.root()
        published = await bus.js.get_msg("AGENTOS_EVENTS", r["log_seq"])  # into the log itself
        event = json.loads(published.data or b"")
        assert event["type"] == kind and event["data"]["note"] == r["note"]


async def test_a_restart_after_a_tail_of_checkpoint_events_signs_no_checkpoint_of_them(
    bus: Bus, pool: asyncpg.Pool, audit: Projector, signer: Signer, tenant: str
) -> None:
    """The schedule resumes counting as it counts live: checkpoint events after the newest
    checkpoint are not entries to sign (else every restart would add a checkpoint of them)."""
    import asyncio

    await bus.publish_many([bus.new(GoalSubmitted(goal_id=unique("g"), text="r"), tenant=tenant) for _ in range(5)])
    await caught_up(bus, pool, audit.schema)
    await audit.stop()  # signs the head; its checkpoint event lands in the log after it
    signed = await pool.fetchval(f"SELECT count(*) FROM {audit.schema}.tree_checkpoints")
    for _ in range(2):  # the first projects the checkpoint event, the second resumes after it
        again = Projector(
            bus, pool, schema=audit.schema, durable=audit.durable, signer=signer, batch=256, checkpoint_idle_s=0.2
        )
        await again.start()
        await caught_up(bus, pool, audit.schema)
        await asyncio.sleep(1.5)  # past the idle timer
        await again.stop()
    assert await pool.fetchval(f"SELECT count(*) FROM {audit.schema}.tree_checkpoints") == signed
