"""Signed webhooks (Standard Webhooks), replay protection across two gateways, and the shipped
Zendesk and Square mappings."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from typing import Any

import httpx
from agentos_gateway.webhooks import sign
from agentos_kernel.testing import eventually
from agentos_schemas import codec, new_event_id
from agentos_schemas.events import GoalSubmitted
from agentos_schemas.events.ingress import RefundRecorded, SaleRecorded, TicketReceived

from tests.gateway.conftest import OLD_SECRET, SECRET, Running, dead_letters, dlq_seq, stored
from tests.gateway.test_events import problem, ticket


def zendesk_ticket(ticket_id: str = "35436") -> dict[str, Any]:
    return {
        "type": "zen:event-type:ticket.created",
        "account_id": 88888888,
        "id": new_event_id(),
        "time": "2026-11-20T17:18:10Z",
        "zendesk_event_version": "2022-11-06",
        "subject": f"zen:ticket:{ticket_id}",
        "detail": {
            "id": ticket_id,
            "subject": "Blender arrived broken",
            "description": "It does not spin.",
            "priority": "HIGH",
            "status": "OPEN",
            "requester_id": "9001",
            "tags": ["returns", "vip"],
        },
        "event": {},
    }


def square(kind: str, amount: int, when: str = "2026-11-20T10:00:00Z") -> dict[str, Any]:
    obj = {
        "id": f"{kind}-{new_event_id()[-8:]}",
        "amount_money": {"amount": amount, "currency": "USD"},
        "status": "COMPLETED",
        "order_id": "order-1",
        "location_id": "LOC1",
    }
    if kind == "refund":
        obj |= {"payment_id": "pay-1", "reason": "damaged"}
    return {
        "merchant_id": "M1",
        "type": f"{kind}.created",
        "event_id": new_event_id(),
        "created_at": when,
        "data": {"type": kind, "id": obj["id"], "object": {kind: obj}},
    }


async def deliver(
    http: httpx.AsyncClient,
    source: str,
    payload: Any,
    *,
    secret: str = SECRET,
    webhook_id: str | None = None,
    timestamp: float | None = None,
    query: str = "",
) -> httpx.Response:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = sign(secret, webhook_id or f"msg_{new_event_id()}", body, timestamp)
    return await http.post(
        f"/webhooks/{source}{query}", content=body, headers=headers | {"content-type": "application/json"}
    )


async def test_a_signed_zendesk_ticket_becomes_a_fact_and_a_goal_once(gateway: Running) -> None:
    t = gateway.tenant
    async with gateway.client(role=None) as http:
        payload = zendesk_ticket()
        first = await deliver(http, "zendesk", payload, webhook_id="msg_1")
        assert first.status_code == 202, first.text
        goal_id = first.json()["goal_id"]
        replay = await deliver(http, "zendesk", payload, webhook_id="msg_1")
        assert replay.status_code == 200 and replay.json()["duplicate"] is True
        rotated = await deliver(http, "zendesk", zendesk_ticket("777"), secret=OLD_SECRET)
        assert rotated.status_code == 202
    events = await stored(gateway.bus, f"agentos.{t}.>", wait_for=4)
    assert len(events) == 4
    fact = next(e for e in events if isinstance(e.data, TicketReceived) and e.data.ticket_id == "35436")
    assert fact.data.priority == "high" and fact.data.tags == ("returns", "vip") and fact.principal == "webhook:zendesk"
    goal = next(e for e in events if isinstance(e.data, GoalSubmitted) and e.data.goal_id == goal_id)
    # the requester's words stay in the (encrypted, erasable) ticket fact, never in the goal
    assert goal.data.text.startswith("Triage Zendesk ticket #35436") and goal.data.inputs["ticket_id"] == "35436"
    assert "Blender arrived broken" not in goal.data.text and fact.data.subject == "Blender arrived broken"
    assert fact.correlationid == goal_id and fact.time == dt.datetime(2026, 11, 20, 17, 18, 10, tzinfo=dt.UTC)
    # the goal is stamped when the gateway took it (its deadline counts from then), not with the
    # vendor's older time, which would have failed it at once on its deadline
    assert goal.time is not None and abs((dt.datetime.now(dt.UTC) - goal.time).total_seconds()) < 60


async def test_bad_signatures_stale_timestamps_and_unmappable_payloads_are_rejected(gateway: Running) -> None:
    start = await dlq_seq(gateway.bus)
    async with gateway.client(role=None) as http:
        body = json.dumps(zendesk_ticket()).encode()
        forged = sign(SECRET, "msg_x", body) | {"content-type": "application/json"}
        tampered = await http.post("/webhooks/zendesk", content=body.replace(b"HIGH", b"LOW"), headers=forged)
        assert "no webhook-signature matches" in problem(tampered, 401, "bad_signature")["detail"]
        wrong = await deliver(http, "zendesk", zendesk_ticket(), secret="whsec_" + "A" * 32)
        problem(wrong, 401, "bad_signature")
        stale = await deliver(http, "zendesk", zendesk_ticket(), timestamp=time.time() - 3600)
        assert "s old; the tolerance is 300s" in problem(stale, 401, "stale_timestamp")["detail"]
        unsigned = await http.post("/webhooks/zendesk", json=zendesk_ticket())
        assert "webhook-id" in problem(unsigned, 401, "missing_signature_headers")["detail"]
        problem(await deliver(http, "nosuch", zendesk_ticket()), 422, "unknown_source")
        problem(await deliver(http, "nomap", zendesk_ticket()), 422, "unknown_mapping")
        other = square("payment", 100) | {"type": "payment.updated"}
        doc = problem(await deliver(http, "square", other), 422, "no_matching_rule")
        assert "payment.updated" in doc["detail"]
        broken = square("refund", 100)
        del broken["data"]["object"]["refund"]["amount_money"]
        doc = problem(await deliver(http, "square", broken), 422, "missing_field")
        assert "amount_money.amount" in doc["detail"]
        problem(await deliver(http, "square", b"{not json"), 400, "invalid_json")
    letters = await dead_letters(gateway.bus, start, wait_for=9)
    codes = [m.headers["AgentOS-DLQ-Code"] for m in letters]
    assert codes == [
        "bad_signature",
        "bad_signature",
        "stale_timestamp",
        "missing_signature_headers",
        "unknown_source",
        "unknown_mapping",
        "no_matching_rule",
        "missing_field",
        "invalid_json",
    ]
    assert await stored(gateway.bus, f"agentos.{gateway.tenant}.>", timeout=0.3) == []


async def test_two_gateways_receiving_the_same_webhook_open_one_goal(start_gateway: Any) -> None:
    a, b = await start_gateway(), await start_gateway()
    payload = zendesk_ticket("4242")
    async with a.client(role=None) as ha, b.client(role=None) as hb:
        both = await asyncio.gather(
            deliver(ha, "zendesk", payload, webhook_id="msg_same"),
            deliver(hb, "zendesk", payload, webhook_id="msg_same"),
        )
        assert all(r.status_code in (200, 202) for r in both), [r.text for r in both]
        later = await asyncio.gather(*(deliver(h, "zendesk", payload, webhook_id="msg_same") for h in (ha, hb)))
        assert [r.status_code for r in later] == [200, 200]
        assert all(r.json()["duplicate"] for r in later)
    events = await stored(a.bus, f"agentos.{a.tenant}.>", wait_for=2)
    assert sum(isinstance(e.data, GoalSubmitted) for e in events) == 1
    assert len(events) == 2


async def test_square_sales_and_refunds_map_to_facts_with_amounts(gateway: Running) -> None:
    async with gateway.client(role=None) as http:
        assert (await deliver(http, "square", square("payment", 2599))).status_code == 202
        assert (await deliver(http, "square", square("refund", 1250))).status_code == 202
    events = await stored(gateway.bus, f"agentos.{gateway.tenant}.>", wait_for=2)
    sale = next(e.data for e in events if isinstance(e.data, SaleRecorded))
    refund = next(e.data for e in events if isinstance(e.data, RefundRecorded))
    assert (sale.amount, sale.currency, sale.order_id, sale.location_id) == (2599, "USD", "order-1", "LOC1")
    assert (refund.amount, refund.payment_id, refund.reason, refund.status) == (
        1250,
        "pay-1",
        "damaged",
        "completed",
    )


async def test_dry_runs_previews_ingest_and_signed_cloudevents(gateway: Running) -> None:
    t = gateway.tenant
    payload = square("refund", 999)
    async with (
        gateway.client(role=None) as hook,
        gateway.client("analyst") as analyst,
        gateway.client() as integrator,
    ):
        dry = await deliver(hook, "square", payload, query="?dry_run=true")
        assert dry.status_code == 200 and dry.json()["events"][0]["data"]["amount"] == 999
        preview = await analyst.post("/mappings/zendesk/preview", json=zendesk_ticket())
        assert preview.status_code == 200 and preview.json()["rule"] == "ticket-created"
        assert [e["type"] for e in preview.json()["events"]] == [
            TicketReceived.ce_type(),
            GoalSubmitted.ce_type(),
        ]
        bad = await analyst.post("/mappings/square/preview", json={"type": "nope"})
        problem(bad, 422, "no_matching_rule")
        assert await stored(gateway.bus, f"agentos.{t}.>", timeout=0.3) == []
        ingested = await integrator.post("/ingest/square", json=payload)
        assert ingested.status_code == 202 and ingested.json()["rule"] == "refund-created"
        event = ticket(t, 99)
        signed = await deliver(hook, "ce", codec.encode(event))
        assert signed.status_code == 202 and signed.json()["events"][0]["id"] == event.id
        listing = await integrator.get("/mappings")
        assert {"zendesk", "square", "cloudevent"} <= set(listing.json()["mappings"])
    events = await stored(gateway.bus, f"agentos.{t}.>", wait_for=2)
    assert {e.type for e in events} == {RefundRecorded.ce_type(), event.type}
    assert next(e for e in events if e.id == event.id).principal == "webhook:ce"


async def test_the_replay_record_is_stored_behind_the_answer_and_protects_other_gateways(
    start_gateway: Any,
) -> None:
    """The record of an accepted delivery reaches the KV bucket after the 202 (not on the critical
    path); a gateway that never saw the delivery then answers a replay from the bucket, publishing
    nothing. With the record gone, the stream's Nats-Msg-Id dedup still makes a replay a no-op."""
    a = await start_gateway()
    async with a.client(role=None) as http:
        payload, other = zendesk_ticket("5150"), zendesk_ticket("5151")
        assert (await deliver(http, "zendesk", payload, webhook_id="msg_durable")).status_code == 202
        assert (await deliver(http, "zendesk", other, webhook_id="msg_gone")).status_code == 202
    guard = a.gw.replays
    assert guard is not None
    key = guard.key("zendesk", "msg_durable")

    async def recorded() -> bool:
        try:
            return bool((await guard.kv.get(key)).value)
        except Exception:
            return False

    await eventually(recorded)
    await eventually(lambda: _true(guard.pending == 0))
    await guard.kv.delete(guard.key("zendesk", "msg_gone"))
    b = await start_gateway()  # a fresh process: nothing in memory
    async with b.client(role=None) as http:
        replay = await deliver(http, "zendesk", payload, webhook_id="msg_durable")
        assert replay.status_code == 200 and replay.json()["duplicate"] is True, replay.text
        assert replay.json()["rule"] == "ticket-created" and len(replay.json()["events"]) == 2
        assert b.gw.accepted == 0  # answered from the bucket, before publishing
        gone = await deliver(http, "zendesk", other, webhook_id="msg_gone")
        assert gone.status_code == 200 and gone.json()["duplicate"] is True, gone.text
        assert b.gw.accepted == 2  # published again, and the stream said: both already stored
    events = await stored(a.bus, f"agentos.{a.tenant}.>", wait_for=4)
    assert len(events) == 4 and sum(isinstance(e.data, GoalSubmitted) for e in events) == 2


async def test_many_deliveries_at_once_are_all_stored_once_before_their_202(gateway: Running) -> None:
    """Concurrent requests share the publish acks (group commit); each 202 still means stored."""
    t = gateway.tenant
    events = [ticket(t, n) for n in range(40)]
    async with gateway.client(role=None) as http:
        first = await asyncio.gather(
            *(deliver(http, "ce", codec.encode(e), webhook_id=f"msg_c{i}") for i, e in enumerate(events))
        )
        assert [r.status_code for r in first] == [202] * 40, [r.text for r in first if r.status_code != 202]
        got = await stored(gateway.bus, f"agentos.{t}.>", timeout=0.5)  # no waiting: already stored
        assert sorted(e.id for e in got) == sorted(e.id for e in events)
        again = await asyncio.gather(
            *(deliver(http, "ce", codec.encode(e), webhook_id=f"msg_c{i}") for i, e in enumerate(events))
        )
        assert [r.status_code for r in again] == [200] * 40 and all(r.json()["duplicate"] for r in again)
    assert len(await stored(gateway.bus, f"agentos.{t}.>", timeout=0.5)) == 40


async def _true(value: bool) -> bool:
    return value
