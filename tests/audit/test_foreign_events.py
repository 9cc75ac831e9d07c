"""CloudEvents that integrators send, in the audit log: a foreign type (kept verbatim under
``ingress.raw.<tenant>``) and a catalogue event carrying the sender's own extension attributes are
projected with their extensions, ``datacontenttype`` and ``dataschema``; ``audit query`` finds
them by their type; the export holds them byte for byte; ``verify`` passes over them."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import asyncpg
from agentos_audit import export
from agentos_audit.projector import Projector
from agentos_audit.rpc import AuditRPC
from agentos_audit.verify import verify
from agentos_kernel import Bus
from agentos_schemas import new_event_id
from agentos_schemas.events.ingress import TicketReceived
from agentos_schemas.rpc import AuditQuery

from tests.audit.conftest import caught_up
from tests.gateway.conftest import start_gateway  # noqa: F401  (the gateway fixture, here too)

STRUCTURED = {"content-type": "application/cloudevents+json"}


async def test_sent_cloudevents_are_projected_with_everything_they_carried(
    bus: Bus,
    pool: asyncpg.Pool,
    audit: Projector,
    start_gateway: Any,  # noqa: F811
) -> None:
    gateway = await start_gateway()
    order = {
        "specversion": "1.0",
        "id": new_event_id(),
        "source": "/shop",
        "type": "com.example.order.created",
        "subject": "order/9",
        "datacontenttype": "application/xml",
        "dataschema": "https://shop.example/order.xsd",
        "shopregion": "eu",
        "shoplabels": ["gift", 2],
        "data": "<order id='9'/>",
    }
    ticket = {
        "specversion": "1.0",
        "id": new_event_id(),
        "source": "/desk",
        "type": TicketReceived.ce_type(),
        "deskshard": 4,
        "data": {"system": "desk", "ticket_id": "9", "deskcolour": "red"},
    }
    blob = bytes(range(200))
    async with gateway.client() as http:
        for doc in (order, ticket):
            assert (await http.post("/events", headers=STRUCTURED, content=json.dumps(doc))).status_code == 202
        binary = {"content-type": "image/png", "ce-specversion": "1.0", "ce-id": "png-9", "ce-source": "/cam"}
        resp = await http.post("/events", headers=binary | {"ce-type": "com.example.snapshot"}, content=blob)
        assert resp.status_code == 202
    await caught_up(bus, pool, audit.schema)
    rows = {
        r["id"]: r
        for r in await pool.fetch(
            f"SELECT id, type, subject, tenant, datacontenttype, dataschema, extensions::text AS ext, data_base64, "
            f"data::text AS data FROM {audit.schema}.events WHERE tenant = $1",
            gateway.tenant,
        )
    }
    o, t, p = rows[order["id"]], rows[ticket["id"]], rows["png-9"]
    assert (o["type"], o["subject"], o["datacontenttype"], o["dataschema"]) == (
        "com.example.order.created",
        "order/9",
        "application/xml",
        "https://shop.example/order.xsd",
    )
    assert json.loads(o["ext"]) == {"shopregion": "eu", "shoplabels": ["gift", 2]}
    assert json.loads(o["data"]) == "<order id='9'/>"
    assert json.loads(t["ext"]) == {"deskshard": 4} and json.loads(t["data"])["deskcolour"] == "red"
    assert base64.b64decode(p["data_base64"]) == blob and p["data"] == "null"

    rpc = AuditRPC(pool, audit.schema, max_bytes=1 << 20)
    reply = await rpc.query(AuditQuery(type="com.example.order.created", tenant=gateway.tenant))
    assert [(r["id"], r["extensions"]) for r in reply.rows] == [
        (order["id"], {"shopregion": "eu", "shoplabels": ["gift", 2]})
    ]

    out = io.BytesIO()
    await export.write_jsonl(out, export.records(pool, audit.schema, None, None, gateway.tenant))
    exported = {r["id"]: r for r in map(json.loads, out.getvalue().splitlines())}
    assert exported[order["id"]]["extensions"]["shopregion"] == "eu"
    assert base64.b64decode(exported["png-9"]["data_base64"]) == blob
    report = await verify(bus, pool, audit.schema, None)
    assert report.ok, report.divergences[:3]
