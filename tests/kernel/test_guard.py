"""Redaction before every store (agentos_kernel.guard): key-value puts, dead letters (originals
kept only sealed, shredded by erasure) and JSON sent to Postgres — against the session's real
NATS JetStream and Postgres."""

from __future__ import annotations

import json

import asyncpg
from agentos_kernel import Bus, guard, shred
from agentos_kernel.db import create_pool
from agentos_kernel.testing import eventually, unique
from agentos_schemas import DLQ_STREAM, dlq_subject
from nats.js import api

PII = "mail jane.doe@example.com, SSN 123-45-6789, card 4111 1111 1111 1111, key sk-proj-Q8wErTy5uIoPaSdFgHjKlZxCvBnM12"
RAW = ("jane.doe@example.com", "123-45-6789", "4111 1111 1111 1111", "sk-proj-Q8wErTy5uIoPaSdFgHjKlZxCvBnM12")


def leaks(blob: bytes | str) -> list[str]:
    text = blob.decode(errors="replace") if isinstance(blob, bytes) else blob
    return [v for v in RAW if v in text]


async def test_key_value_puts_are_redacted(bus: Bus) -> None:
    name = unique("KVG").upper()
    kv = await bus.js.create_key_value(api.KeyValueConfig(bucket=name, history=1))
    await kv.put("doc", json.dumps({"task_id": "4111111111111111", "messages": [{"content": PII}]}).encode())
    await kv.put("text", PII.encode())
    await kv.put("binary", b"\xff\x00" + PII.encode())  # not text: left as it is
    doc = json.loads((await kv.get("doc")).value or b"")
    assert doc["task_id"] == "4111111111111111" and not leaks(json.dumps(doc))
    assert "[EMAIL]" in doc["messages"][0]["content"] and "[SECRET]" in doc["messages"][0]["content"]
    assert not leaks((await kv.get("text")).value or b"")
    assert (await kv.get("binary")).value == b"\xff\x00" + PII.encode()
    await bus.js.delete_key_value(name)


async def dead_letters(bus: Bus, subject: str) -> list[object]:
    info = await bus.js.stream_info(DLQ_STREAM)
    found = []
    for seq in range(max(info.state.first_seq, info.state.last_seq - 50), info.state.last_seq + 1):
        msg = await bus.js.get_msg(DLQ_STREAM, seq)
        if msg.subject == subject:
            found.append(msg)
    return found


async def test_a_rejected_input_is_stored_redacted_and_its_original_sealed_until_erased(bus: Bus, tenant: str) -> None:
    body = json.dumps(
        {
            "specversion": "1.0",
            "type": "dev.agentos.ticket.received.v1",
            "id": "x",
            "source": "crm",
            "data": {"requester_id": "cust-42", "requester_name": "Ada Lovelace", "description": PII, "ticket_id": 7},
        }
    ).encode()
    msg_id = f"gateway:{unique('dl')}"
    await bus.publish_raw(
        dlq_subject("gateway"),
        body,
        {
            "Nats-Msg-Id": msg_id,
            "AgentOS-DLQ-Stream-Seq": "0",
            "AgentOS-DLQ-Tenant": tenant,
            "AgentOS-DLQ-Reason": f"data.ticket_id: input should be a string (input {PII})",
            "X-Contact": PII,
        },
    )
    [msg] = [
        m for m in await dead_letters(bus, dlq_subject("gateway")) if (m.headers or {}).get("Nats-Msg-Id") == msg_id
    ]  # type: ignore[attr-defined]
    headers = dict(msg.headers or {})  # type: ignore[attr-defined]
    stored = (msg.data or b"") + json.dumps(headers).encode()  # type: ignore[attr-defined]
    assert not leaks(stored) and b"Ada Lovelace" not in stored
    copy = json.loads(msg.data)  # type: ignore[attr-defined]
    assert copy["data"]["requester_name"] == guard.SEALED and copy["data"]["ticket_id"] == 7
    assert headers[guard.SUBJECT_HEADER] == "cust-42"  # sealed with the requester's own key
    assert set(headers[guard.REDACTED_HEADER].split(",")) == {"email", "national_id", "card", "secret"}
    assert await guard.open_dead_letter(bus.shredder.keys, headers) == body

    await shred.erase(bus.js, tenant, "cust-42")  # what `agentos audit erase cust-42` does first
    keys = shred.SubjectKeys(bus.js)  # a fresh process: nothing cached
    try:
        assert await guard.open_dead_letter(keys, headers) is None

        async def shredded() -> bool:
            return await guard.open_dead_letter(bus.shredder.keys, headers) is None

        await eventually(shredded, timeout=10)
    finally:
        await keys.close()


async def test_an_untyped_rejection_is_sealed_under_its_own_erasable_key(bus: Bus, tenant: str) -> None:
    msg_id = f"gateway:{unique('dl')}"
    body = b"not json at all: " + PII.encode()
    await bus.publish_raw(
        dlq_subject("gateway"),
        body,
        {"Nats-Msg-Id": msg_id, "AgentOS-DLQ-Stream-Seq": "0", "AgentOS-DLQ-Tenant": tenant},
    )
    [msg] = [
        m for m in await dead_letters(bus, dlq_subject("gateway")) if (m.headers or {}).get("Nats-Msg-Id") == msg_id
    ]  # type: ignore[attr-defined]
    headers = dict(msg.headers or {})  # type: ignore[attr-defined]
    assert not leaks(msg.data) and headers[guard.SUBJECT_HEADER] == f"dead-letter:{msg_id}"  # type: ignore[attr-defined]
    assert await guard.open_dead_letter(bus.shredder.keys, headers) == body
    await shred.erase(bus.js, tenant, f"dead-letter:{msg_id}")

    async def shredded() -> bool:  # this process forgets the key when its watch hears the purge
        return await guard.open_dead_letter(bus.shredder.keys, headers) is None

    await eventually(shredded, timeout=10)


async def test_a_consumer_dead_letter_is_redacted_and_points_at_the_log(bus: Bus) -> None:
    durable = unique("dlc")
    await bus.publish_raw(
        dlq_subject(durable),
        json.dumps({"note": PII}).encode(),
        {"Nats-Msg-Id": f"{durable}:9", "AgentOS-DLQ-Stream-Seq": "9", "AgentOS-DLQ-Reason": PII},
    )
    [msg] = await dead_letters(bus, dlq_subject(durable))
    headers = dict(msg.headers or {})  # type: ignore[attr-defined]
    assert not leaks(msg.data) and not leaks(json.dumps(headers))  # type: ignore[attr-defined]
    assert guard.RAW_HEADER not in headers  # the event log keeps the original at sequence 9


async def test_json_sent_to_postgres_is_redacted(settings: object, tenant: str) -> None:
    pool: asyncpg.Pool = await create_pool(settings.database_url)  # type: ignore[attr-defined]
    try:
        async with pool.acquire() as conn:
            await conn.execute(f"CREATE TABLE {tenant} (doc jsonb, j json, plain text)")
            await conn.execute(
                f"INSERT INTO {tenant} VALUES ($1, $2, $3)",
                json.dumps({"goal_id": "123-45-6789", "args": {"to": PII}}),
                json.dumps([PII]),
                "x",
            )
            doc, j = await conn.fetchrow(f"SELECT doc, j FROM {tenant}")
            assert json.loads(doc)["goal_id"] == "123-45-6789" and not leaks(json.loads(doc)["args"]["to"])
            assert not leaks(j) and "[NATIONAL_ID]" in j
            await conn.execute(f"DROP TABLE {tenant}")
    finally:
        await pool.close()
