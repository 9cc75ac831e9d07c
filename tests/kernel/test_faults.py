"""Bad input and faults against real NATS and Postgres: nothing valid is lost, nothing bad stops a
consumer, nothing takes effect twice."""

from __future__ import annotations

import asyncio
import random
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
from agentos_kernel import Bus, KernelSettings, Retry
from agentos_kernel.db import first_time, migrate
from agentos_kernel.embedded import EmbeddedNats
from agentos_kernel.testing import eventually, unique
from agentos_schemas import DLQ_STREAM, Event, codec, dlq_subject
from agentos_schemas.events import GoalSubmitted

TRACKED = [
    "CREATE TABLE {schema}.effects (seq bigserial PRIMARY KEY, event_id text NOT NULL, goal_id text NOT NULL)",
    "CREATE TABLE {schema}.deliveries (seq bigserial PRIMARY KEY, event_id text NOT NULL)",
]


async def tracked_handler(pool: asyncpg.Pool, schema: str, durable: str) -> Any:
    """A handler whose effect (an appended row) and tracking record commit together.

    Every delivery is logged too, so a test can see that redeliveries happened and were absorbed."""
    await migrate(pool, schema, TRACKED)

    async def handle(event: Event[Any]) -> None:
        await pool.execute(f"INSERT INTO {schema}.deliveries (event_id) VALUES ($1)", event.id)
        async with pool.acquire() as conn, conn.transaction():
            if await first_time(conn, schema, durable, event.id):
                await conn.execute(
                    f"INSERT INTO {schema}.effects (event_id, goal_id) VALUES ($1, $2)", event.id, event.data.goal_id
                )

    return handle


def malformed(kind: str, tenant: str, limit: int) -> bytes:
    base = f'"specversion":"1.0","id":"{unique("bad")}","source":"fuzz","tenant":"{tenant}"'
    return {
        "not_cloudevent": b"<xml>not a cloudevent</xml>",
        "unknown_type": ("{" + base + ',"type":"dev.agentos.goal.teleported.v1","data":{}}').encode(),
        "schema": ("{" + base + ',"type":"dev.agentos.goal.submitted.v1","data":{"goal_id":1}}').encode(),
        "oversized": (
            "{" + base + ',"type":"dev.agentos.goal.submitted.v1","data":{"goal_id":"g","text":"' + "y" * limit + '"}}'
        ).encode(),
        "encoding": b'{"specversion":"1.0","id":"\xc3\x28","source":"s","type":"t"}',
    }[kind]


async def dlq_codes(bus: Bus, durable: str) -> Counter[str]:
    codes: Counter[str] = Counter()
    sub = await bus.js.subscribe(dlq_subject(durable), stream=DLQ_STREAM, ordered_consumer=True)
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=1.0)
            except (TimeoutError, Exception):
                break
            headers = msg.headers or {}
            assert headers["AgentOS-DLQ-Reason"], "every dead letter says why"
            assert headers["AgentOS-DLQ-Consumer"] == durable
            codes[headers["AgentOS-DLQ-Code"]] += 1
    finally:
        await sub.unsubscribe()
    return codes


async def test_one_in_five_malformed_of_a_thousand(settings: KernelSettings, pool: asyncpg.Pool, tenant: str) -> None:
    bus = await Bus.connect(settings.model_copy(update={"max_event_bytes": 16 * 1024}), source="fuzz")
    await bus.provision()
    durable, schema = unique("dl"), unique("s")
    handler = await tracked_handler(pool, schema, durable)
    kinds = ["not_cloudevent", "unknown_type", "schema", "oversized", "encoding"]
    rng = random.Random(7)
    batch: list[tuple[str, bytes, dict[str, str]]] = []
    good = 0
    for i in range(1000):
        subject = f"agentos.{tenant}.goal.submitted"
        if i % 5 == 4:
            body = malformed(kinds[(i // 5) % 5], tenant, 20 * 1024)
            batch.append((subject, body, {"Nats-Msg-Id": unique("m")}))
        else:
            event = bus.new(GoalSubmitted(goal_id=f"g{i}", text=f"goal {i}"), tenant=tenant)
            batch.append((subject, codec.encode(event), codec.headers_for(event)))
            good += 1
    rng.shuffle(batch)
    consumer = await bus.consumer(durable, [f"agentos.{tenant}.>"], handler).start()
    await bus.publish_raw_many(batch)

    async def all_done() -> bool:
        n = await pool.fetchval(f"SELECT count(*) FROM {schema}.effects")
        return n == good and consumer.dead_lettered == 200

    await eventually(all_done, timeout=60)
    assert await pool.fetchval(f"SELECT count(DISTINCT event_id) FROM {schema}.effects") == good
    assert await dlq_codes(bus, durable) == Counter({k: 40 for k in kinds})
    await consumer.stop()
    await bus.close()


async def test_failing_handler_is_retried_then_dead_lettered(bus: Bus, tenant: str) -> None:
    attempts: Counter[str] = Counter()
    done: list[str] = []

    async def handler(event: Event[Any]) -> None:
        attempts[event.data.goal_id] += 1
        if event.data.goal_id == "poison":
            raise Retry("tool backend is down")
        done.append(event.data.goal_id)

    durable = unique("rt")
    consumer = await bus.consumer(durable, [f"agentos.{tenant}.>"], handler, max_deliver=3, backoff=(0.05, 0.1)).start()
    await bus.publish(bus.new(GoalSubmitted(goal_id="poison", text="x"), tenant=tenant))
    await bus.publish(bus.new(GoalSubmitted(goal_id="after", text="y"), tenant=tenant))

    async def settled() -> bool:
        return consumer.dead_lettered == 1 and "after" in done

    await eventually(settled)
    assert attempts["poison"] == 3 and attempts["after"] == 1
    codes = await dlq_codes(bus, durable)
    assert codes == Counter({"handler_failed": 1})
    await consumer.stop()


async def test_nats_restart_loses_nothing_acknowledged(
    settings: KernelSettings, pool: asyncpg.Pool, tenant: str
) -> None:
    server = EmbeddedNats(Path(tempfile.mkdtemp(prefix="agentos-restart-")), sync="always")
    url = server.start()
    try:
        await _restart_scenario(
            server, settings.model_copy(update={"nats_url": url, "publish_timeout_s": 30}), pool, tenant
        )
    finally:
        server.stop()


async def _restart_scenario(server: EmbeddedNats, local: KernelSettings, pool: asyncpg.Pool, tenant: str) -> None:
    bus = await Bus.connect(local, source="restart")
    await bus.provision()
    durable, schema = unique("rs"), unique("s")
    consumer = await bus.consumer(
        durable, [f"agentos.{tenant}.>"], await tracked_handler(pool, schema, durable)
    ).start()
    acked: list[str] = []

    async def publisher() -> None:
        for i in range(300):
            event = bus.new(GoalSubmitted(goal_id=f"g{i}", text="t"), tenant=tenant)
            await bus.publish(event)
            acked.append(event.id)

    task = asyncio.create_task(publisher())
    await eventually(lambda: _at_least(acked, 100))
    server.kill()
    await asyncio.sleep(0.5)
    await asyncio.to_thread(server.start)
    await asyncio.wait_for(task, 60)

    async def all_processed() -> bool:
        return await pool.fetchval(f"SELECT count(*) FROM {schema}.effects") == 300

    await eventually(all_processed, timeout=60)
    effects = [r["event_id"] for r in await pool.fetch(f"SELECT event_id FROM {schema}.effects")]
    assert sorted(effects) == sorted(acked), "every acknowledged event took effect exactly once"
    deliveries = await pool.fetchval(f"SELECT count(*) FROM {schema}.deliveries")
    assert deliveries >= 300
    await consumer.stop()
    await bus.close()


async def _at_least(items: list[str], n: int) -> bool:
    return len(items) >= n


async def test_a_postgres_outage_holds_the_message_instead_of_spending_its_deliveries(bus: Bus, tenant: str) -> None:
    """A handler whose Postgres is stopped (for real) is held and run again in place: with one
    delivery allowed, the event is still handled once Postgres is back, and nothing is dead-lettered."""
    from agentos_kernel.embedded import EmbeddedPostgres

    root = Path(tempfile.mkdtemp(prefix="agentos-hold-"))
    pg = EmbeddedPostgres(root / "postgres")
    url = await asyncio.to_thread(pg.start)
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    assert pool is not None
    durable, schema = unique("hold"), unique("s")
    handler = await tracked_handler(pool, schema, durable)
    deliveries: list[int] = []

    async def counting(event: Event[Any]) -> None:
        deliveries.append(1)
        await handler(event)

    consumer = await bus.consumer(durable, [f"agentos.{tenant}.>"], counting, max_deliver=1).start()
    try:
        await asyncio.to_thread(pg.stop)
        await bus.publish(bus.new(GoalSubmitted(goal_id="g1", text="x"), tenant=tenant))
        await eventually(lambda: asyncio.sleep(0, len(deliveries) >= 2), timeout=20)  # tried, and held
        assert await asyncio.to_thread(pg.start) == url

        async def handled() -> bool:
            return await pool.fetchval(f"SELECT count(*) FROM {schema}.effects") == 1

        await eventually(handled, timeout=30, every=0.2)
        assert consumer.dead_lettered == 0
    finally:
        await consumer.stop()
        await pool.close()
        await asyncio.to_thread(pg.stop)
        shutil.rmtree(root, ignore_errors=True)
