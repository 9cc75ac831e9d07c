"""The Python SDK (HTTP with retries and idempotency keys; NATS for in-cluster use) and `agentos send`."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from agentos_gateway.client import BusClient, GatewayClient, GatewayError
from agentos_kernel import Bus
from agentos_schemas import codec
from agentos_schemas.events import GoalSubmitted
from agentos_schemas.events.ingress import RefundRecorded

from tests.gateway.conftest import Running, key_for, stored
from tests.gateway.test_events import ticket
from tests.gateway.test_webhooks import square


async def test_sdk_publishes_submits_and_polls_through_a_real_gateway(gateway: Running) -> None:
    t = gateway.tenant
    async with GatewayClient(gateway.url, key_for("admin", t)) as client:
        one, batch = ticket(t, 1), [ticket(t, 2), ticket(t, 3)]
        assert (await client.publish(one)).ids == [one.id]
        assert (await client.publish(*batch)).ids == [e.id for e in batch]
        assert (await client.publish(one)).duplicates == [one.id]
        receipt = await client.submit_goal("Check stock", inputs={"sku": "B-1"}, idempotency_key="stock-1")
        again = await client.submit_goal("Check stock", inputs={"sku": "B-1"}, idempotency_key="stock-1")
        assert again.goal_id == receipt.goal_id and again.replayed
        assert (await client.goal_status(receipt.goal_id))["status"] == "submitted"
        assert (await client.preview("square", square("refund", 10)))["rule"] == "refund-created"
        assert (await client.ingest("square", square("refund", 10)))["accepted"] == 1
        with pytest.raises(GatewayError) as info:
            await client.publish(
                {"specversion": "1.0", "id": "x", "source": "s", "type": "dev.agentos.no.such.v1", "data": {}}
            )
        assert info.value.status == 422 and info.value.problem["code"] == "unknown_type"
    assert len(await stored(gateway.bus, f"agentos.{t}.ticket.*", wait_for=3)) == 3
    assert len(await stored(gateway.bus, f"agentos.{t}.goal.submitted", wait_for=1)) == 1


async def test_sdk_retries_5xx_429_and_lost_connections_with_one_idempotency_key() -> None:
    seen: list[str] = []
    answers = iter(["connect", 503, 429, 202])

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["idempotency-key"])
        answer = next(answers)
        if answer == "connect":
            raise httpx.ConnectError("refused", request=request)
        if answer == 429:
            return httpx.Response(429, headers={"Retry-After": "0"}, json={"code": "rate_limited"})
        if answer == 503:
            return httpx.Response(503, json={"code": "bus_unavailable"})
        return httpx.Response(202, json={"goal_id": "g1", "status_url": "/goals/g1", "duplicate": False})

    async with GatewayClient(
        "http://gateway.invalid", "k", backoff_s=0.01, transport=httpx.MockTransport(handler)
    ) as client:
        receipt = await client.submit_goal("x")
    assert receipt.goal_id == "g1" and len(seen) == 4 and len(set(seen)) == 1


async def test_bus_client_submits_goals_in_cluster_without_duplicates(bus: Bus, tenant: str) -> None:
    client = BusClient(bus)
    first = await client.submit_goal("Reconcile the till", tenant=tenant, idempotency_key="till-7")
    second = await client.submit_goal("Reconcile the till", tenant=tenant, idempotency_key="till-7")
    assert first == second
    goals = await stored(bus, f"agentos.{tenant}.goal.submitted", wait_for=1)
    assert [g.data.goal_id for g in goals] == [first] and isinstance(goals[0].data, GoalSubmitted)


async def _agentos(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agentos_cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_agentos_send_posts_files_and_dry_runs_show_the_mapped_event(gateway: Running, tmp_path: Path) -> None:
    t = gateway.tenant
    refund = tmp_path / "refund.json"
    refund.write_text(json.dumps(square("refund", 4321)))
    common = ["--gateway", gateway.url, "--key", key_for("integrator", t)]
    code, out, err = await _agentos("send", str(refund), "--source", "square", "--dry-run", *common)
    assert code == 0, err
    doc: dict[str, Any] = json.loads(out)
    assert doc["published"] is False and doc["events"][0]["data"]["amount"] == 4321
    assert await stored(gateway.bus, f"agentos.{t}.>", timeout=0.2) == []
    code, out, err = await _agentos("send", str(refund), "--source", "square", *common)
    assert code == 0 and json.loads(out)["accepted"] == 1, err
    event_file = tmp_path / "event.json"
    event_file.write_bytes(codec.encode(ticket(t, 8)))
    code, out, err = await _agentos("send", str(event_file), *common)
    assert code == 0 and json.loads(out)["mode"] == "structured", err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"type": "payment.updated"}))
    code, out, err = await _agentos("send", str(bad), "--source", "square", *common)
    assert code == 1 and "no_matching_rule" in err and "payment.updated" in err
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"type": "zen:event-type:other"}))
    code, out, err = await _agentos("send", str(other), "--source", "zendesk", "--dry-run", *common)
    # the rule's accepted types are printed as the gateway wrote them ([…] is not console markup)
    assert code == 1 and "type in [zen:event-type:ticket.status_changed," in " ".join(err.split()), err
    events = await stored(gateway.bus, f"agentos.{t}.>", wait_for=2)
    assert {e.type for e in events} == {RefundRecorded.ce_type(), ticket(t).type}
