"""Foreign CloudEvents as triggers: a mapping subscribed to a foreign type maps the event (kept as
it came) into catalogue events caused by it, once however often it is sent; a KPI rule watching a
foreign type counts and sums its JSON data and fires."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import asyncpg
from agentos_gateway.kpi import load_rules
from agentos_gateway.kpi_engine import KpiEngine
from agentos_kernel import Bus
from agentos_kernel.testing import eventually, unique
from agentos_schemas.events import GoalSubmitted
from agentos_schemas.events.ingress import KpiTriggered

from tests.gateway.conftest import Running, stored
from tests.gateway.test_triggers import publisher

STRUCTURED = {"content-type": "application/cloudevents+json"}
BATCH = {"content-type": "application/cloudevents-batch+json"}

RETURNS = """
source: shopreturns
description: a shop's own return requests (CloudEvents) open a returns goal
cloudevents: [com.example.return.requested]
rules:
  - name: return-requested
    when: ["type == com.example.return.requested"]
    emit:
      - type: goal.submitted
        data:
          text: "Customer {data.customer} wants to return order {data.order}: {data.reason}"
          workflow: returns
"""


def returned(order: str, **extra: Any) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": f"ret-{order}",
        "source": "/shop/returns",
        "type": "com.example.return.requested",
        "shopregion": "eu",
        "data": {"order": order, "customer": "c-17", "reason": "too small", **extra},
    }


async def test_a_mapping_subscribed_to_a_foreign_type_turns_it_into_a_goal(start_gateway: Any, tmp_path: Path) -> None:
    (tmp_path / "shopreturns.yaml").write_text(RETURNS)
    gateway: Running = await start_gateway(mappings_dir=tmp_path)
    async with gateway.client() as http:
        resp = await http.post("/events", headers=STRUCTURED, content=json.dumps(returned("1042")))
        assert resp.status_code == 202, resp.text
        [trigger] = resp.json()["triggered"]
        assert (trigger["mapping"], trigger["cause"]) == ("shopreturns", "ret-1042")
        again = await http.post("/events", headers=STRUCTURED, content=json.dumps(returned("1042")))
        assert again.json()["events"][0]["duplicate"] is True
        bad = returned("77")
        del bad["data"]["customer"]  # the mapping needs it: this one item is refused, the rest published
        batch = await http.post("/events", headers=BATCH, content=json.dumps([returned("2001"), bad]))
        assert batch.status_code == 202 and batch.json()["refused"] == 1, batch.text
        assert batch.json()["events"][1]["code"] == "missing_field"
    goals = await stored(gateway.bus, f"agentos.{gateway.tenant}.goal.submitted", wait_for=2)
    assert sorted(g.data.text for g in goals) == [
        "Customer c-17 wants to return order 1042: too small",
        "Customer c-17 wants to return order 2001: too small",
    ]
    assert all(isinstance(g.data, GoalSubmitted) and g.data.workflow == "returns" for g in goals)
    assert sorted(g.causationid for g in goals) == ["ret-1042", "ret-2001"]
    raw = await stored(gateway.bus, f"ingress.raw.{gateway.tenant}", wait_for=2)
    assert sorted(e.id for e in raw) == ["ret-1042", "ret-2001"]  # the foreign events themselves, kept


KPI = """
rules:
  - name: eu-returns
    event: com.example.return.requested
    measure: sum:refund_cents
    where: {{region: eu}}
    window: 1h
    threshold: 1000
    tenant: {tenant}
"""


async def test_a_kpi_rule_watches_a_foreign_type(
    bus: Bus, pool: asyncpg.Pool, start_gateway: Any, tmp_path: Path
) -> None:
    gateway: Running = await start_gateway()
    (tmp_path / "kpi.yaml").write_text(KPI.format(tenant=gateway.tenant))
    engine = await KpiEngine(
        pool, bus, load_rules(tmp_path / "kpi.yaml"), publisher(bus), durable=unique("kpi")
    ).start()
    hour = dt.datetime(2026, 12, 1, 10, tzinfo=dt.UTC)
    try:
        async with gateway.client() as http:
            for n, (region, cents) in enumerate([("eu", 600), ("us", 900), ("eu", 500), ("eu", 100)]):
                event = returned(str(n), region=region, refund_cents=cents)
                event["time"] = (hour + dt.timedelta(minutes=n)).isoformat()
                assert (await http.post("/events", headers=STRUCTURED, content=json.dumps(event))).status_code == 202

        async def fired() -> bool:
            return len(await stored(bus, f"agentos.{gateway.tenant}.kpi.triggered", timeout=0)) >= 1

        await eventually(fired, timeout=20)
    finally:
        await engine.stop()
    [kpi] = [e.data for e in await stored(bus, f"agentos.{gateway.tenant}.kpi.triggered")]
    assert isinstance(kpi, KpiTriggered) and kpi.event_type == "com.example.return.requested"
    assert [w.value for w in kpi.windows] == [1100]  # 600 + 500 (eu) crossed 1000; us not counted
