"""The one backoff: capped exponential pauses with jitter (random, or derived from a key so that
replicas and replays agree), and Retry-After read as seconds or an HTTP date; the gateway SDK
waits what the gateway asks for, within its cap."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
from agentos_gateway.client import GatewayClient
from agentos_kernel.retry import Backoff, retry_after


def test_pauses_double_up_to_the_cap_and_are_jittered_down() -> None:
    b = Backoff(first_s=0.5, cap_s=4.0, jitter=0.2)
    for attempt, base in enumerate([0.5, 1.0, 2.0, 4.0, 4.0, 4.0]):
        pauses = {b.delay(attempt) for _ in range(50)}
        assert all(base * 0.8 <= p <= base for p in pauses), (attempt, pauses)
        assert len(pauses) > 1, "jittered"
    assert b.delay(10_000) <= 4.0, "no overflow however many attempts"
    assert Backoff(jitter=0).delay(2) == pytest.approx(0.8)


def test_a_keyed_pause_is_the_same_every_time_and_differs_between_keys() -> None:
    b = Backoff(first_s=1.0, cap_s=30.0)
    assert b.delay(3, key="g/a") == b.delay(3, key="g/a")
    assert len({b.delay(3, key=f"g/{i}") for i in range(20)}) > 10


@pytest.mark.parametrize("bad", [{"first_s": 0}, {"first_s": 5, "cap_s": 1}, {"factor": 0.5}, {"jitter": 1.0}])
def test_a_backoff_that_cannot_work_is_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**bad)


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = time.time()
    later = format_datetime(datetime.fromtimestamp(now, UTC) + timedelta(seconds=90), usegmt=True)
    earlier = format_datetime(datetime.fromtimestamp(now, UTC) - timedelta(seconds=90), usegmt=True)
    assert retry_after("120") == 120.0
    assert retry_after(later, now=now) == pytest.approx(90, abs=1)
    assert retry_after(earlier, now=now) == 0.0, "a date in the past: now"
    assert retry_after("soon") is None and retry_after("") is None and retry_after(None) is None


async def test_the_sdk_waits_the_http_date_the_gateway_asks_for_within_its_cap() -> None:
    seen: list[float] = []
    answers = iter(["date", "far", 202])

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(time.monotonic())
        answer = next(answers)
        if answer == "date":
            when = format_datetime(datetime.now(UTC) + timedelta(seconds=2), usegmt=True)
            return httpx.Response(503, headers={"Retry-After": when}, json={"code": "unavailable"})
        if answer == "far":
            return httpx.Response(429, headers={"Retry-After": "3600"}, json={"code": "rate_limited"})
        return httpx.Response(202, json={"goal_id": "g1", "status_url": "/goals/g1", "duplicate": False})

    async with GatewayClient(
        "http://gateway.invalid", "k", backoff_s=0.01, max_retry_after_s=2.5, transport=httpx.MockTransport(handler)
    ) as client:
        receipt = await client.submit_goal("x")
    assert receipt.goal_id == "g1" and len(seen) == 3
    assert 0.9 <= seen[1] - seen[0] <= 2.5, "the date was honoured (whole seconds, so 1-2 s)"
    assert 2.4 <= seen[2] - seen[1] <= 3.5, "an hour's Retry-After is capped"
