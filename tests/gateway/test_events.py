"""POST /events: the CloudEvents HTTP binding in all three modes, with the official SDK and plain
httpx, and every kind of malformed request answered with the right 4xx, kept in the DLQ, while
valid requests interleaved with them all reach the stream."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from agentos_schemas import Event, codec, new_event_id
from agentos_schemas.events import GoalCompleted
from agentos_schemas.events.ingress import TicketReceived
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from tests.gateway.conftest import Running, dead_letters, dlq_seq, stored

TYPE = TicketReceived.ce_type()
STRUCTURED = {"content-type": "application/cloudevents+json"}
BATCH = {"content-type": "application/cloudevents-batch+json"}


def ticket(tenant: str, n: int = 1) -> Event[TicketReceived]:
    return Event(
        data=TicketReceived(system="tests", ticket_id=str(n), subject=f"ticket {n}"),
        source="tests",
        type=TYPE,
        tenant=tenant,
    )


def sdk_event(tenant: str, ticket_id: str) -> CloudEvent:
    attrs = {
        "type": TYPE,
        "source": "/tests/sdk",
        "id": new_event_id(),
        "specversion": "1.0",
        "tenant": tenant,
        "datacontenttype": "application/json",
    }
    return CloudEvent(attrs, {"system": "sdk", "ticket_id": ticket_id})


def problem(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    doc: dict[str, Any] = resp.json()
    assert doc["code"] == code and doc["status"] == status and doc["detail"], doc
    return doc


async def test_sdk_and_httpx_clients_in_all_three_modes_reach_the_stream(gateway: Running) -> None:
    t = gateway.tenant
    async with gateway.client() as http:
        binary = ce_http.to_binary(sdk_event(t, "sdk-binary"), JSONFormat())
        assert (await http.post("/events", headers=binary.headers, content=binary.body)).status_code == 202
        structured = ce_http.to_structured(sdk_event(t, "sdk-structured"), JSONFormat())
        assert (await http.post("/events", headers=structured.headers, content=structured.body)).status_code == 202
        plain = ticket(t, 3)
        resp = await http.post("/events", headers=STRUCTURED, content=codec.encode(plain))
        assert resp.status_code == 202 and resp.json()["events"][0]["id"] == plain.id
        resp = await http.post(
            "/events",
            content=json.dumps({"system": "httpx", "ticket_id": "bin"}),
            headers={
                "content-type": "application/json",
                "ce-specversion": "1.0",
                "ce-id": new_event_id(),
                "ce-source": "%2Ftests%2Fhttpx",
                "ce-type": TYPE,
            },
        )
        assert resp.status_code == 202 and resp.json()["mode"] == "binary"
        batch = [ticket(t, 10 + i) for i in range(3)]
        body = b"[" + b",".join(codec.encode(e) for e in batch) + b"]"
        resp = await http.post("/events", headers=BATCH, content=body)
        assert resp.status_code == 202 and resp.json()["accepted"] == 3
        again = await http.post("/events", headers=STRUCTURED, content=codec.encode(plain))
        assert again.status_code == 202 and again.json()["events"][0]["duplicate"] is True
    events = await stored(gateway.bus, f"agentos.{t}.>", wait_for=7)
    ids = sorted(e.data.ticket_id for e in events)
    assert ids == sorted(["sdk-binary", "sdk-structured", "3", "bin", "10", "11", "12"])
    by_id = {e.data.ticket_id: e for e in events}
    assert by_id["bin"].source == "/tests/httpx"  # percent-decoded, per the HTTP binding
    assert all(e.principal == "key:integrator-key" for e in events)


def ce(**attrs: Any) -> bytes:
    return json.dumps({"specversion": "1.0", "source": "s", "type": TYPE, **attrs}).encode()


def malformed(tenant: str) -> list[tuple[int, str, str, dict[str, Any]]]:
    """(status, code, a phrase of the detail, request) for every kind of malformed request."""
    big = Event(
        data=TicketReceived(system="t", ticket_id="big", description="x" * 300_000),
        source="tests",
        type=TYPE,
        tenant=tenant,
    )
    envelope = {"specversion": "1.0", "source": "s", "type": TYPE}
    bad_batch = [envelope | {"id": "b", "data": {"ticket_id": 5}}, {"id": "c"}]
    binary = {"content-type": "application/json", "ce-specversion": "1.0", "ce-type": TYPE}
    return [
        (400, "invalid_json", "not valid JSON", {"headers": STRUCTURED, "content": b'{"id": "x", "source": '}),
        (
            400,
            "missing_attribute",
            "source",
            {"headers": STRUCTURED, "content": json.dumps({"id": "1", "specversion": "1.0", "type": TYPE})},
        ),
        (400, "missing_attribute", "'id'", {"headers": binary, "content": b"{}"}),
        (
            415,
            "unsupported_media_type",
            "application/cloudevents+json",
            {"headers": {"content-type": "text/plain"}, "content": b"hello"},
        ),
        (413, "event_too_large", "byte limit", {"headers": STRUCTURED, "content": codec.encode(big)}),
        (
            422,
            "unknown_type",
            "nope.made_up",
            {"headers": STRUCTURED, "content": ce(id="u1", type="dev.agentos.nope.made_up.v1", data={})},
        ),
        (422, "schema_invalid", "ticket_id", {"headers": STRUCTURED, "content": ce(id="s1", data={"system": "x"})}),
        (422, "batch_rejected", "2 of 2 events are invalid", {"headers": BATCH, "content": json.dumps(bad_batch)}),
        (
            403,
            "type_reserved",
            "only the AgentOS runtime states",
            {
                "headers": STRUCTURED,
                "content": ce(id="r1", type=GoalCompleted.ce_type(), data={"goal_id": "g", "result": "forged"}),
            },
        ),
    ]


async def test_malformed_requests_get_the_right_problem_and_valid_ones_are_not_lost(gateway: Running) -> None:
    start = await dlq_seq(gateway.bus)
    cases = malformed(gateway.tenant)
    good = [ticket(gateway.tenant, i) for i in range(len(cases) + 1)]
    async with gateway.client() as http:
        for (status, code, phrase, request), event in zip(cases, good, strict=False):
            ok = await http.post("/events", headers=STRUCTURED, content=codec.encode(event))
            assert ok.status_code == 202
            doc = problem(await http.post("/events", **request), status, code)
            assert phrase in doc["detail"], doc
            if code == "batch_rejected":
                assert [(e["index"], e["code"]) for e in doc["errors"]] == [
                    (0, "schema_invalid"),
                    (1, "missing_attribute"),
                ]
        last = await http.post("/events", headers=STRUCTURED, content=codec.encode(good[-1]))
        assert last.status_code == 202
    events = await stored(gateway.bus, f"agentos.{gateway.tenant}.>", wait_for=len(good))
    assert sorted(e.id for e in events) == sorted(e.id for e in good)
    letters = await dead_letters(gateway.bus, start, wait_for=len(cases))
    assert [(int(m.headers["AgentOS-DLQ-Status"]), m.headers["AgentOS-DLQ-Code"]) for m in letters] == [
        (status, code) for status, code, _, _ in cases
    ]
    assert {(m.headers["AgentOS-DLQ-Consumer"], m.headers["AgentOS-DLQ-Subject"]) for m in letters} == {
        ("gateway", "POST /events")
    }
    assert letters[0].data == b'{"id": "x", "source": '
    assert all("authorization" not in {k.lower() for k in m.headers} for m in letters)


async def test_oversized_body_is_413_and_dry_run_publishes_nothing(start_gateway: Any) -> None:
    gw = await start_gateway(max_body_bytes=4096)
    start = await dlq_seq(gw.bus)
    async with gw.client() as http:
        problem(await http.post("/events", headers=STRUCTURED, content=b"[" * 10_000), 413, "body_too_large")
        event = ticket(gw.tenant, 1)
        resp = await http.post("/events?dry_run=true", headers=STRUCTURED, content=codec.encode(event))
        assert resp.status_code == 200 and resp.json()["events"][0]["data"]["ticket_id"] == "1"
    letters = await dead_letters(gw.bus, start, wait_for=1)
    assert letters[0].headers["AgentOS-DLQ-Code"] == "body_too_large"
    assert await stored(gw.bus, f"agentos.{gw.tenant}.>", timeout=0.5) == []


async def test_concurrent_posts_share_acks_and_each_202_means_stored(gateway: Running) -> None:
    """POST /events on the fast path: many requests in flight, every 202 already in the log, and a
    resent event is stored once (its id is the Nats-Msg-Id) and reported as a duplicate."""
    t = gateway.tenant
    events = [ticket(t, n) for n in range(30)]
    async with gateway.client() as http:
        answers = await asyncio.gather(
            *(http.post("/events", headers=STRUCTURED, content=codec.encode(e)) for e in events)
        )
        assert [r.status_code for r in answers] == [202] * 30
        assert len(await stored(gateway.bus, f"agentos.{t}.>", timeout=0.5)) == 30
        again = await http.post("/events", headers=STRUCTURED, content=codec.encode(events[0]))
        assert again.status_code == 202 and again.json()["events"][0]["duplicate"] is True
    assert len(await stored(gateway.bus, f"agentos.{t}.>", timeout=0.5)) == 30
