"""POST /events against the CloudEvents 1.0 spec and its HTTP binding: what the spec forbids is
refused naming the attribute and never reaches the bus; a well-formed event of any type is accepted
(foreign types kept verbatim under ``ingress.raw.<tenant>``) with nothing of it lost or changed —
extension attributes of any JSON value, ``datacontenttype``, ``dataschema``, ``subject``, ``time``
as sent, unknown data fields, and non-JSON data byte for byte; batches answer per event."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
from typing import Any

import msgspec
import nats.errors
from agentos_kernel import Bus, KernelSettings
from agentos_kernel.replay import replay
from agentos_schemas import EVENTS_STREAM, codec, new_event_id
from agentos_schemas.events.ingress import TicketReceived
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from nats.js import api

from tests.gateway.conftest import Running, dead_letters, dlq_seq

TICKET = TicketReceived.ce_type()
STRUCTURED = {"content-type": "application/cloudevents+json"}
BATCH = {"content-type": "application/cloudevents-batch+json"}
ADDED = ("tenant", "principal", "correlationid")  # what AgentOS sets on an event it takes in


def base(**attrs: Any) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": new_event_id(),
        "source": "/shop/orders",
        "type": "com.example.order.created",
    } | attrs


async def raw_messages(bus: Bus, subject: str) -> list[Any]:
    """Every message on ``subject`` in the log, undecoded."""
    sub = await bus.js.subscribe(
        subject, stream=EVENTS_STREAM, ordered_consumer=True, deliver_policy=api.DeliverPolicy.ALL
    )
    out: list[Any] = []
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=0.5)
            except (TimeoutError, nats.errors.TimeoutError):
                return out
            out.append(msg)
            if msg.metadata.num_pending == 0:
                return out
    finally:
        await sub.unsubscribe()


def members(body: bytes) -> dict[str, bytes]:
    """Each top-level member of a structured event as its exact JSON text."""
    return {k: bytes(v) for k, v in msgspec.json.decode(body, type=dict[str, msgspec.Raw]).items()}


FORBIDDEN: list[tuple[str, dict[str, Any], str, str]] = [
    ("empty id", base(id=""), "empty_attribute", "id"),
    ("id not a string", base(id=7), "invalid_attribute", "id"),
    ("empty source", base(source=""), "empty_attribute", "source"),
    ("source not a URI-reference", base(source="shop orders"), "invalid_attribute", "source"),
    (
        "missing specversion",
        {k: v for k, v in base().items() if k != "specversion"},
        "missing_attribute",
        "specversion",
    ),
    ("unknown specversion", base(specversion="0.3"), "unsupported_specversion", "specversion"),
    ("empty type", base(type=""), "empty_attribute", "type"),
    ("relative dataschema", base(dataschema="schemas/order.json"), "invalid_attribute", "dataschema"),
    ("empty subject", base(subject=""), "empty_attribute", "subject"),
    ("empty datacontenttype", base(datacontenttype=""), "empty_attribute", "datacontenttype"),
    ("malformed time", base(time="2026-13-01T00:00:00Z"), "invalid_attribute", "time"),
    ("time without a zone", base(time="2026-12-01T10:00:00"), "invalid_attribute", "time"),
    ("upper-case attribute name", base(Region="eu"), "invalid_attribute_name", "Region"),
    ("attribute name with _", base(my_ext="x"), "invalid_attribute_name", "my_ext"),
    ("data and data_base64", base(data={"a": 1}, data_base64="YQ=="), "data_conflict", "data_base64"),
    ("data_base64 not base64", base(data_base64="%%%"), "invalid_data", "data_base64"),
]


async def test_what_the_spec_forbids_is_refused_naming_the_attribute_and_never_reaches_the_bus(
    gateway: Running,
) -> None:
    start = await dlq_seq(gateway.bus)
    good = base(data={"n": 1})
    async with gateway.client() as http:
        for name, doc, code, attribute in FORBIDDEN:
            resp = await http.post("/events", headers=STRUCTURED, content=json.dumps(doc))
            assert resp.status_code == 400, (name, resp.text)
            problem = resp.json()
            assert (problem["code"], problem["attribute"]) == (code, attribute), (name, problem)
            assert resp.headers["content-type"] == "application/problem+json"
        binary = {"content-type": "application/json", "ce-specversion": "1.0", "ce-id": "b1", "ce-type": "x.y"}
        resp = await http.post("/events", headers=binary | {"ce-source": "a b"}, content=b"{}")
        assert (resp.status_code, resp.json()["attribute"]) == (400, "source")
        resp = await http.post("/events", headers=binary | {"ce-source": "/s", "ce-My_Ext": "1"}, content=b"{}")
        assert (resp.status_code, resp.json()["attribute"]) == (400, "my_ext")  # HTTP header names are case-blind
        assert (await http.post("/events", headers=STRUCTURED, content=json.dumps(good))).status_code == 202
    stored = await raw_messages(gateway.bus, f"ingress.raw.{gateway.tenant}")
    assert [json.loads(m.data)["id"] for m in stored] == [good["id"]]  # only the valid one
    letters = await dead_letters(gateway.bus, start, wait_for=len(FORBIDDEN) + 2)
    assert len(letters) == len(FORBIDDEN) + 2


async def test_a_foreign_event_is_kept_verbatim_with_its_extensions_and_data(gateway: Running) -> None:
    sent = base(
        subject="order/1042",
        time="2026-12-08T10:15:00.5+02:00",
        dataschema="https://shop.example/schemas/order-created.json",
        datacontenttype="application/xml",
        region="eu-west",
        priority=3,
        flags={"vip": True, "tags": ["a", "b"]},
        sampled=False,
        data='<order id="1042"><total currency="EUR">12.50</total></order>',
    )
    body = json.dumps(sent, indent=2).encode()  # whitespace and all: members must survive as sent
    async with gateway.client() as http:
        resp = await http.post("/events", headers=STRUCTURED, content=body)
        assert resp.status_code == 202, resp.text
        assert resp.json()["events"][0]["id"] == sent["id"]
    [msg] = await raw_messages(gateway.bus, f"ingress.raw.{gateway.tenant}")
    kept, original = members(msg.data), members(body)
    for name, value in original.items():
        assert json.loads(kept[name]) == json.loads(value), name
    assert set(kept) - set(original) == set(ADDED)
    assert json.loads(kept["principal"]) == "key:integrator-key"
    assert json.loads(kept["data"]) == sent["data"]


async def test_binary_mode_data_of_any_media_type_round_trips_byte_for_byte(gateway: Running) -> None:
    cases = [
        ("text/plain; charset=iso-8859-1", "Grüße aus Köln".encode("latin-1"), "data_base64"),
        ("text/plain", "naïve café ✓".encode(), "data"),
        ("application/xml", b"<a><b>1</b></a>", "data"),
        ("application/octet-stream", bytes(range(256)), "data_base64"),
        ("application/vnd.shop+json", b'{"b": 2,  "a": [1, 2.50]}', "data"),
    ]
    async with gateway.client() as http:
        for n, (ctype, data, _) in enumerate(cases):
            headers = {
                "content-type": ctype,
                "ce-specversion": "1.0",
                "ce-id": f"bin-{n}",
                "ce-source": "urn:shop:till%2F7",
                "ce-type": "com.example.blob",
                "ce-traceflags": "x%20y",
            }
            resp = await http.post("/events", headers=headers, content=data)
            assert resp.status_code == 202, resp.text
            assert resp.json()["mode"] == "binary"
    stored = await raw_messages(gateway.bus, f"ingress.raw.{gateway.tenant}")
    assert len(stored) == len(cases)
    for msg, (ctype, data, member) in zip(stored, cases, strict=True):
        doc = json.loads(msg.data)
        assert doc["datacontenttype"] == ctype and doc["source"] == "urn:shop:till/7"
        assert doc["traceflags"] == "x y"  # an extension, percent-decoded per the HTTP binding
        if member == "data_base64":
            assert base64.b64decode(doc["data_base64"]) == data and "data" not in doc
        elif ctype.endswith("json"):
            assert members(msg.data)["data"] == data  # JSON data as sent, to the byte
        else:
            assert doc["data"].encode() == data


async def test_a_catalogue_event_keeps_unknown_fields_extensions_and_attributes_as_sent(gateway: Running) -> None:
    sent = {
        "specversion": "1.0",
        "id": new_event_id(),
        "source": "https://desk.example/api",
        "type": TICKET,
        "subject": "ticket/77",
        "time": "2026-12-08T09:00:00+01:00",
        "datacontenttype": "application/json; charset=utf-8",
        "dataschema": "https://desk.example/schemas/ticket.json",
        "deskregion": "emea",
        "deskshard": 4,
        "data": {"system": "desk", "ticket_id": "77", "subject": "broken", "deskcolour": "red"},
    }
    async with gateway.client() as http:
        resp = await http.post("/events", headers=STRUCTURED, content=json.dumps(sent))
        assert resp.status_code == 202, resp.text
    [msg] = await raw_messages(gateway.bus, f"agentos.{gateway.tenant}.ticket.received")
    doc = json.loads(msg.data)
    for name in ("subject", "time", "datacontenttype", "dataschema", "deskregion", "deskshard", "source"):
        assert doc[name] == sent[name], name
    assert doc["data"]["deskcolour"] == "red"  # an unknown field is kept
    decoded = await gateway.bus.decode(msg.data, msg.headers)  # and the event is still its typed self
    assert isinstance(decoded.data, TicketReceived) and decoded.data.ticket_id == "77"
    replayed: list[Any] = []
    await replay(gateway.bus, [f"agentos.{gateway.tenant}.ticket.received"], replayed.append)
    [again] = replayed  # read back from the log, its sender's extensions are still on it, and written again
    assert {k: json.loads(bytes(v)) for k, v in (again.extensions or {}).items()} == {
        "deskregion": "emea",
        "deskshard": 4,
    }
    copy = json.loads(codec.encode(again))
    assert (copy["deskregion"], copy["deskshard"]) == ("emea", 4)


async def test_a_batch_is_answered_per_event(gateway: Running) -> None:
    start = await dlq_seq(gateway.bus)
    blob = bytes(range(7, 200))
    items = [
        base(data={"n": 0}),
        base(source=""),
        base(datacontenttype="text/csv", data="sku,qty\nA-1,2\n"),
        {"id": "x"},
        base(datacontenttype="application/pdf", data_base64=base64.b64encode(blob).decode()),
    ]
    async with gateway.client() as http:
        resp = await http.post("/events", headers=BATCH, content=json.dumps(items))
    assert resp.status_code == 202, resp.text
    answer = resp.json()
    assert (answer["accepted"], answer["refused"]) == (3, 2)
    assert [e.get("id") for e in answer["events"]] == [items[0]["id"], None, items[2]["id"], None, items[4]["id"]]
    assert [(e["index"], e.get("attribute")) for e in answer["events"] if "code" in e] == [(1, "source"), (3, "source")]
    stored = {
        json.loads(m.data)["id"]: json.loads(m.data)
        for m in await raw_messages(gateway.bus, f"ingress.raw.{gateway.tenant}")
    }
    assert sorted(stored) == sorted([items[0]["id"], items[2]["id"], items[4]["id"]])
    assert stored[items[2]["id"]]["data"] == "sku,qty\nA-1,2\n"  # text and binary data in a batch, as sent
    assert base64.b64decode(stored[items[4]["id"]]["data_base64"]) == blob
    assert len(await dead_letters(gateway.bus, start, wait_for=2)) == 2


async def test_a_tenant_may_refuse_foreign_types(start_gateway: Any) -> None:
    running = await start_gateway(refuse_foreign_types=("*",))
    async with running.client() as http:
        resp = await http.post("/events", headers=STRUCTURED, content=json.dumps(base(data={})))
    assert resp.status_code == 422
    assert (resp.json()["code"], resp.json()["attribute"]) == ("foreign_type_refused", "type")
    assert await raw_messages(running.bus, f"ingress.raw.{running.tenant}") == []


async def test_events_written_by_the_official_sdk_are_accepted_in_both_modes(gateway: Running) -> None:
    event = CloudEvent(
        {"type": "com.example.sdk", "source": "/sdk", "id": "sdk-1", "specversion": "1.0", "shard": "7"},
        {"hello": "world"},
    )
    async with gateway.client() as http:
        for message in (ce_http.to_binary(event, JSONFormat()), ce_http.to_structured(event, JSONFormat())):
            resp = await http.post("/events", headers=message.headers, content=message.body)
            assert resp.status_code == 202, resp.text
    stored = await raw_messages(gateway.bus, f"ingress.raw.{gateway.tenant}")
    # The same (source, id) twice is one event: JetStream de-duplicates what the sender repeated.
    assert len(stored) == 1
    doc = json.loads(stored[0].data)
    assert (doc["shard"], doc["data"]) == ("7", {"hello": "world"})


async def test_agentos_tail_shows_foreign_events(gateway: Running, settings: KernelSettings) -> None:
    sent = base(subject="order/5", datacontenttype="text/plain", data="five mugs, gift-wrapped")
    async with gateway.client() as http:
        assert (await http.post("/events", headers=STRUCTURED, content=json.dumps(sent))).status_code == 202
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTOS_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agentos_cli",
        "tail",
        "--all",
        "--idle-exit",
        "1",
        "--subject",
        f"ingress.raw.{gateway.tenant}",
        env={**env, "AGENTOS_NATS_URL": settings.nats_url or "", "COLUMNS": "200"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    text = out.decode()
    assert proc.returncode == 0, text
    assert "com.example.order.created" in text and "five mugs, gift-wrapped" in text, text
