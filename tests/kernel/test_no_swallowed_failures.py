"""No failure in the kernel is swallowed: a broad catch is left only at a marked boundary that
counts what it caught, every other catch names the types it expects, and what a place carries on
after is logged, counted and reported (:mod:`agentos_kernel.faults`), never suppressed silently."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import agentos_kernel
import asyncpg
import nats.errors
import pytest
from agentos_kernel import Bus, Retry
from agentos_kernel.control import ControlState, Halt
from agentos_kernel.db import unavailable_as
from agentos_kernel.exceptions import Unavailable
from agentos_kernel.faults import FAULTS
from agentos_kernel.llm import LLM, ModelRegistry, ModelSpec
from agentos_kernel.nats_connection import _error_callback
from agentos_kernel.policy import model_prices
from agentos_kernel.redact import RedactingFilter, redact_record
from agentos_kernel.tasks import cancel_and_wait
from agentos_kernel.testing import eventually, unique
from agentos_schemas import Event
from agentos_schemas.events import GoalSubmitted

KERNEL = Path(agentos_kernel.__file__).parent
BROAD = re.compile(r"except\b[^:\n]*\b(Base)?Exception\b|except\s*:")
SUPPRESSED = re.compile(r"suppress\([^)]*\b(Base)?Exception\b")


def _block(lines: list[str], at: int) -> list[str]:
    """The lines of the block under the ``except`` at line index ``at``."""
    indent = len(lines[at]) - len(lines[at].lstrip())
    block = []
    for line in lines[at + 1 :]:
        if line.strip() and len(line) - len(line.lstrip()) <= indent:
            break
        block.append(line)
    return block


def marked_boundary(line: str, block: list[str]) -> bool:
    """``# noqa: BLE001  (boundary: why)`` on the except line; or, where ruff's BLE001 already sees
    the error logged, ``# boundary: why`` on that line or opening its block."""
    first = next((b.strip() for b in block if b.strip()), "")
    return ("noqa: BLE001" in line and "(boundary:" in line) or "# boundary:" in line or first.startswith("# boundary:")


def test_every_broad_catch_left_in_the_kernel_is_a_counted_boundary_and_nothing_is_suppressed() -> None:
    found = []
    for path in sorted(KERNEL.glob("*.py")):
        lines = path.read_text().splitlines()
        for at, line in enumerate(lines):
            where = f"{path.name}:{at + 1}"
            if SUPPRESSED.search(line):
                found.append(f"{where}: suppresses any exception")
            if not BROAD.search(line):
                continue
            block = _block(lines, at)
            if "BaseException" in line:
                if not any(b.strip() == "raise" for b in block):
                    found.append(f"{where}: catches BaseException without raising it again")
            elif not marked_boundary(line, block):
                found.append(f"{where}: a broad catch not marked as a boundary (with why)")
            elif not any("FAULTS.note(" in b for b in block):
                found.append(f"{where}: a boundary that does not count what it caught")
    assert not found, "\n".join(found)


def test_a_log_record_that_does_not_format_is_kept_and_counted_once() -> None:
    place = "redact a log record of agentos.test (its message does not format: kept as it is)"
    before = FAULTS.counts[place]
    record = logging.LogRecord("agentos.test", logging.INFO, __file__, 1, "%d items", ("many",), None)
    assert redact_record(record) is record  # as the record factory does
    assert RedactingFilter().filter(record)  # and again as a handler's filter does: never dropped
    assert (record.msg, record.args) == ("%d items", ("many",))  # kept as logging would keep it
    assert FAULTS.counts[place] == before + 1


async def test_a_background_task_that_died_is_reported_when_it_is_stopped() -> None:
    async def dies() -> None:
        raise RuntimeError("planted")

    task = asyncio.create_task(dies(), name=unique("loop"))
    await asyncio.sleep(0)
    assert await cancel_and_wait(task)  # still never raised
    assert FAULTS.counts[f"background task {task.get_name()}"] == 1

    async def runs() -> None:
        await asyncio.sleep(60)

    stopped = asyncio.create_task(runs(), name=unique("loop"))
    await asyncio.sleep(0)
    assert await cancel_and_wait(stopped)
    assert FAULTS.counts[f"background task {stopped.get_name()}"] == 0  # cancelled: nothing to say


async def test_what_a_subscription_callback_raised_is_counted_the_connections_own_errors_are_not() -> None:
    place = "a NATS subscription's callback"
    denied: dict[str, float] = {}
    on_error = _error_callback("svc", denied)
    before = FAULTS.counts[place]
    await on_error(nats.errors.ConnectionClosedError())
    await on_error(ConnectionResetError("reset"))
    assert FAULTS.counts[place] == before
    await on_error(KeyError("a bug in a callback"))
    assert FAULTS.counts[place] == before + 1
    await on_error(nats.errors.Error('nats: permissions violation for publish to "agentos.x.goal"'))
    assert "agentos.x.goal" in denied and FAULTS.counts[place] == before + 1


def test_unavailable_as_turns_only_outages_into_unavailable() -> None:
    for outage in (ConnectionRefusedError("refused"), asyncpg.InterfaceError("connection is closed")):
        with pytest.raises(Unavailable), unavailable_as("test store (Postgres)"):
            raise outage
    for other in (KeyError("bug"), asyncpg.InterfaceError("another interface error"), ValueError("no")):
        with pytest.raises(type(other)), unavailable_as("test store (Postgres)"):
            raise other


def test_a_listener_that_fails_is_counted_and_the_others_still_hear() -> None:
    place = "tell a control listener of a switch change"
    before = FAULTS.counts[place]
    heard: list[str] = []
    state = ControlState()

    def broken(key: str, halt: Halt | None) -> None:
        raise RuntimeError("planted")

    state.listeners += [broken, lambda key, halt: heard.append(key)]
    state.apply("halt.all", Halt("all", reason="test"))
    assert heard == ["halt.all"] and FAULTS.counts[place] == before + 1


def test_an_alias_outside_the_registry_is_priced_by_the_cost_map() -> None:
    registry = ModelRegistry(
        models=(ModelSpec(alias="a", model="openai/a", input_cost_per_token=1e-6, output_cost_per_token=2e-6),)
    )
    llm = SimpleNamespace(registry=registry)
    assert model_prices(llm, ["a", "no-such-model-anywhere"]) == (1e-6, 2e-6)


async def test_a_model_that_fails_in_the_chain_is_counted_and_the_next_one_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = {"api_base": "http://127.0.0.1:9/v1", "input_cost_per_token": 1e-6, "output_cost_per_token": 1e-6}
    registry = ModelRegistry(
        models=(
            ModelSpec(alias="first", model="openai/first", **spec),
            ModelSpec(alias="second", model="openai/second", **spec),
        )
    )
    llm = LLM(registry, redact=False)

    async def completion(*, model: str, **_: Any) -> Any:
        if model == "openai/first":
            raise RuntimeError("planted provider failure")
        return SimpleNamespace(usage=SimpleNamespace(prompt_tokens=3, completion_tokens=2))

    monkeypatch.setattr(llm, "_acompletion", completion)
    before = FAULTS.counts["call model first"]
    _, calls = await llm.complete(["first", "second"], [{"role": "user", "content": "hi"}])
    assert [c.ok for c in calls] == [False, True] and "planted" in (calls[0].error or "")
    assert FAULTS.counts["call model first"] == before + 1


async def test_a_handler_failure_is_counted_and_a_retry_it_asks_for_is_not(bus: Bus, tenant: str) -> None:
    durable = unique("fails")
    place = f"consumer {durable}: run the handler"
    attempts: list[int] = []

    async def handler(event: Event[Any]) -> None:
        attempts.append(len(attempts) + 1)
        if len(attempts) == 1:
            raise RuntimeError("planted handler failure")
        if len(attempts) == 2:
            raise Retry("asked for", delay=0.1)

    consumer = await bus.consumer(durable, [f"agentos.{tenant}.goal.submitted"], handler, backoff=(0.1,)).start()
    try:
        await bus.publish(bus.new(GoalSubmitted(goal_id=unique("g"), text="fail once"), tenant=tenant))

        async def handled() -> bool:
            return len(attempts) >= 3

        await eventually(handled, timeout=15)
        assert FAULTS.counts[place] == 1 and consumer.dead_lettered == 0
    finally:
        await consumer.stop()
