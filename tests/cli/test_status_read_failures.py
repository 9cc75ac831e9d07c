"""`agentos status` and `agentos watch` never turn a failure to read something into "nothing there":
health records that cannot be listed, or one that cannot be read, show in the report and are a
PROBLEM; a Postgres URL that does not even parse is a red line, not a crash; kill switches that
cannot be read are said so in the watch view until they are read again."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import nats.errors
import nats.js.errors
from agentos_cli import health, inspect_bus
from agentos_cli.goals import GoalView, _watch_switches


class Entry:
    def __init__(self, value: bytes) -> None:
        self.value = value


class KV:
    """A health bucket: ``records`` by key; a value that is an exception is raised by ``get``."""

    def __init__(self, records: dict[str, Any], keys_error: Exception | None = None) -> None:
        self.records = records
        self.keys_error = keys_error

    async def keys(self) -> list[str]:
        if self.keys_error is not None:
            raise self.keys_error
        if not self.records:
            raise nats.js.errors.NoKeysError
        return list(self.records)

    async def get(self, key: str) -> Entry:
        value = self.records[key]
        if isinstance(value, Exception):
            raise value
        return Entry(value)


class JS:
    def __init__(self, kv: KV | Exception) -> None:
        self.kv = kv

    async def key_value(self, bucket: str) -> KV:
        if isinstance(self.kv, Exception):
            raise self.kv
        return self.kv


class FakeBus:
    def __init__(self, kv: KV | Exception) -> None:
        self.js = JS(kv)


def report_with(services: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"dependencies": [], "streams": [], "consumers": [], "projections": [], "services": services, **extra}


async def test_health_records_that_cannot_be_listed_are_a_problem_not_none_reporting() -> None:
    services, unreadable = await inspect_bus.health_records(FakeBus(KV({}, keys_error=nats.errors.TimeoutError())))
    assert services == [] and unreadable is not None and "TimeoutError" in unreadable

    report = report_with(services, services_unreadable=unreadable)
    await health.judge(report, database_url=None, schema="audit")
    assert any(p.startswith("the services' health records could not be read: TimeoutError") for p in report["problems"])


async def test_no_bucket_or_no_keys_is_nobody_reporting() -> None:
    assert await inspect_bus.health_records(FakeBus(nats.js.errors.BucketNotFoundError())) == ([], None)
    assert await inspect_bus.health_records(FakeBus(KV({}))) == ([], None)


async def test_a_record_that_cannot_be_read_is_an_unreadable_row_and_a_problem() -> None:
    ok = {"service": "ledger", "instance": "a", "status": "ok", "ts": 0}
    kv = KV(
        {
            "ledger.a": json.dumps(ok).encode(),
            "policy.b": b"{not json",
            "audit.c": nats.errors.TimeoutError(),
            "memory.d": nats.js.errors.KeyDeletedError(),  # its instance stopped since the keys were listed
        }
    )
    services, unreadable = await inspect_bus.health_records(FakeBus(kv))
    assert unreadable is None
    by_service = {r["service"]: r for r in services}
    assert set(by_service) == {"ledger", "policy", "audit"}
    assert by_service["policy"]["status"] == "unreadable" and "JSONDecodeError" in by_service["policy"]["read_error"]
    assert by_service["audit"]["instance"] == "c" and "TimeoutError" in by_service["audit"]["read_error"]
    problems = health.service_problems([by_service["policy"], by_service["audit"]])
    assert len(problems) == 2 and all("is unreadable: read_error:" in p for p in problems)


async def test_a_postgres_url_that_does_not_parse_is_a_red_line() -> None:
    for url in ("not a url", "postgresql://u@127.0.0.1:abc/db", "postgresql://u@127.0.0.1:1/db"):
        line = await health.postgres(url)
        assert line["ok"] is False and line["detail"].startswith("unreachable: "), line


async def test_the_watch_view_says_when_the_kill_switches_cannot_be_read() -> None:
    class Switchable:
        js: Any = JS(nats.errors.TimeoutError())

    bus, view, changes = Switchable(), GoalView("g-1", tenant="acme"), []
    task = asyncio.create_task(_watch_switches(bus, view, lambda: changes.append(view.switches_unknown), every_s=0.01))
    try:
        while not changes:
            await asyncio.sleep(0.01)
        assert view.switches_unknown is not None and "TimeoutError" in view.switches_unknown
        assert any(line.startswith("kill switches unknown (TimeoutError") for line in view.paused_lines())

        bus.js = JS(KV({}))  # readable again, and no switch is on
        while view.switches_unknown is not None:
            await asyncio.sleep(0.01)
        assert view.paused_lines() == []
    finally:
        task.cancel()
