"""A webhook delivery's identity is (source, webhook-id), for its replay record and for the ids of
the events it maps to; the replay window is a setting; a redelivery after every window (the
gateway's and JetStream's) still starts no second goal, because consumers claim event ids."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from agentos_gateway import GatewaySettings
from agentos_kernel import Bus
from agentos_kernel.testing import eventually, unique
from agentos_schemas import EVENTS_STREAM, Event
from agentos_schemas.events import GoalSubmitted
from pydantic import ValidationError

from tests.gateway.conftest import SECRET, stored
from tests.gateway.test_webhooks import deliver, zendesk_ticket


def two_sources(tenant: str) -> dict[str, Any]:
    """Two Zendesk accounts delivering to one gateway, both through the shipped zendesk mapping."""
    return {
        "webhooks": {
            "zendesk": {"secrets": [SECRET], "tenant": tenant},
            "zendesk-eu": {"secrets": [SECRET], "tenant": tenant, "mapping": "zendesk"},
        }
    }


async def test_the_same_webhook_id_from_two_sources_is_two_deliveries(start_gateway: Any, tenant: str) -> None:
    gateway = await start_gateway(**two_sources(tenant))
    payload = zendesk_ticket("6001")  # even the vendor's own event id is the same
    async with gateway.client(role=None) as http:
        us = await deliver(http, "zendesk", payload, webhook_id="msg_shared")
        eu = await deliver(http, "zendesk-eu", payload, webhook_id="msg_shared")
        assert (us.status_code, eu.status_code) == (202, 202), eu.text
        assert us.json()["goal_id"] != eu.json()["goal_id"]
        again = await deliver(http, "zendesk-eu", payload, webhook_id="msg_shared")
        assert again.status_code == 200 and again.json()["duplicate"] is True
        assert again.json()["events"] == [e["id"] for e in eu.json()["events"]]
    events = await stored(gateway.bus, f"agentos.{tenant}.>", wait_for=4)
    assert len(events) == 4 and sum(isinstance(e.data, GoalSubmitted) for e in events) == 2


def test_the_replay_window_is_a_setting_that_covers_the_timestamp_tolerance() -> None:
    assert GatewaySettings(webhook_dedup_ttl_s=2, webhook_tolerance_s=2).webhook_dedup_ttl_s == 2
    with pytest.raises(ValidationError, match="must be at least webhook_tolerance_s"):
        GatewaySettings(webhook_dedup_ttl_s=60, webhook_tolerance_s=300)


@asynccontextmanager
async def short_duplicate_window(bus: Bus, seconds: float) -> AsyncIterator[None]:
    """The event log's Nats-Msg-Id window shortened for the test (restored after)."""
    config = (await bus.js.stream_info(EVENTS_STREAM)).config
    before = config.duplicate_window
    config.duplicate_window = seconds
    await bus.js.update_stream(config)
    try:
        yield
    finally:
        config.duplicate_window = before
        await bus.js.update_stream(config)


async def test_a_redelivery_after_every_window_starts_no_second_goal(start_gateway: Any, bus: Bus, tenant: str) -> None:
    goals: list[Event[Any]] = []

    async def orchestrate(event: Event[Any]) -> None:  # what a consumer of goals does, once per goal
        goals.append(event)

    durable = unique("goals")
    consumer = await bus.consumer(durable, [f"agentos.{tenant}.goal.submitted"], orchestrate).start()
    gateway = await start_gateway(webhook_dedup_ttl_s=2, webhook_tolerance_s=2)
    payload = zendesk_ticket("7001")
    try:
        async with short_duplicate_window(bus, 1.0), gateway.client(role=None) as http:
            first = await deliver(http, "zendesk", payload, webhook_id="msg_late")
            assert first.status_code == 202, first.text
            inside = await deliver(http, "zendesk", payload, webhook_id="msg_late")
            assert inside.status_code == 200 and inside.json()["duplicate"] is True
            await until(lambda: len(goals) == 1)
            await asyncio.sleep(2.5)  # both the gateway's replay window and JetStream's have passed
            late = await deliver(http, "zendesk", payload, webhook_id="msg_late")
            assert late.status_code == 202, late.text  # published again: nothing upstream remembers
            assert late.json()["goal_id"] == first.json()["goal_id"]  # under the same ids
        copies = await stored(bus, f"agentos.{tenant}.goal.submitted", wait_for=2)
        assert len(copies) == 2 and copies[0].id == copies[1].id
        await until(lambda: consumer.copies == 1)
        assert len(goals) == 1, "the late copy was taken for a second goal"
    finally:
        await consumer.stop()
        await bus.js.delete_consumer(EVENTS_STREAM, durable)


async def until(condition: Callable[[], bool]) -> None:
    async def check() -> bool:
        return condition()

    await eventually(check)
