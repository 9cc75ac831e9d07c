"""The policy service in-process against the session's real NATS and Postgres, with the test
policy in ``policies/strict``; helpers to ask it, read the log and drive the specialist's loop."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from agentos_kernel import Bus, KernelSettings
from agentos_kernel.llm import ModelRegistry, ModelSpec
from agentos_kernel.policy import PolicyClient, PolicyClientSettings
from agentos_kernel.service import ServiceContext, start_service, stop_service
from agentos_kernel.testing import events_on
from agentos_policy.service import setup
from agentos_policy.simulate import read_log
from agentos_schemas import Event, EventData
from agentos_schemas.charter import Charter
from agentos_schemas.events import ContextManifest, ContextReady, ModelCall
from agentos_schemas.rpc import PolicyDecision, PolicyRequest
from agentos_schemas.subjects import parse_type

STRICT = Path(__file__).parent / "policies" / "strict"


@pytest.fixture(scope="module")
async def policy_service(settings: KernelSettings) -> AsyncIterator[ServiceContext]:
    saved = os.environ.get("AGENTOS_POLICY_DIR")
    os.environ["AGENTOS_POLICY_DIR"] = str(STRICT)
    ctx = await start_service("policy", setup, settings, database=True)
    try:
        yield ctx
    finally:
        await stop_service(ctx)
        if saved is None:
            os.environ.pop("AGENTOS_POLICY_DIR", None)
        else:
            os.environ["AGENTOS_POLICY_DIR"] = saved


def client(bus: Bus, **settings: Any) -> PolicyClient:
    return PolicyClient(bus, PolicyClientSettings(approval_poll_s=0.1, **settings))


async def ask(bus: Bus, tenant: str, agent: str, action: str, resource: str, **fields: Any) -> PolicyDecision:
    fields.setdefault("principal", f"agent:{agent}")
    request = PolicyRequest(
        tenant=tenant,
        agent=agent,
        action=action,
        resource=resource,  # type: ignore[arg-type]
        **fields,
    )
    return await client(bus).decide(request)


async def logged(bus: Bus, tenant: str, cls: type[EventData]) -> list[Any]:
    """Payloads of every stored event of ``cls`` for ``tenant``."""
    domain, name, _ = parse_type(cls.ce_type())
    return [e.data async for e in read_log(bus, f"agentos.{tenant}.{domain}.{name}")]


async def logged_at_least(bus: Bus, tenant: str, cls: type[EventData], n: int, timeout: float = 10.0) -> list[Any]:
    """Payloads of ``cls`` for ``tenant`` once at least ``n`` are in the log (facts are published after
    the reply, in batches): waits on their delivery, then reads all that are stored."""
    domain, name, _ = parse_type(cls.ce_type())
    await events_on(bus, f"agentos.{tenant}.{domain}.{name}", n, timeout=timeout)
    return await logged(bus, tenant, cls)


async def logged_events(bus: Bus, tenant: str, cls: type[EventData]) -> list[Event[Any]]:
    domain, name, _ = parse_type(cls.ce_type())
    return [e async for e in read_log(bus, f"agentos.{tenant}.{domain}.{name}")]


# -- driving the specialist's agent loop ---------------------------------------------------------


def registry() -> ModelRegistry:
    return ModelRegistry(
        models=(
            ModelSpec(
                alias="fast", model="openai/offline-fast", input_cost_per_token=0.15e-6, output_cost_per_token=0.60e-6
            ),
        )
    )


def tool_call(name: str, args: dict[str, Any], n: int = 0) -> SimpleNamespace:
    return SimpleNamespace(id=f"call-{name}-{n}", function=SimpleNamespace(name=name, arguments=json.dumps(args)))


class ScriptedLLM:
    """A fake model: answers each call with the next scripted message (tool calls or JSON)."""

    def __init__(self, script: list[list[SimpleNamespace] | dict[str, Any]], cost: float = 0.0004) -> None:
        self.script = list(script)
        self.cost = cost
        self.registry = registry()
        self.seen: list[list[dict[str, Any]]] = []

    async def complete(
        self, chain: list[str], messages: list[dict[str, Any]], **kwargs: Any
    ) -> tuple[Any, list[ModelCall]]:
        self.seen.append([dict(m) for m in messages])
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(step, dict):
            message = SimpleNamespace(content=json.dumps(step), tool_calls=None)
        else:
            message = SimpleNamespace(content=None, tool_calls=step)
        response = SimpleNamespace(choices=[SimpleNamespace(message=message)])
        return response, [
            ModelCall(model="openai/offline-fast", ok=True, input_tokens=300, output_tokens=100, cost_usd=self.cost)
        ]


def charter(name: str, tools: tuple[str, ...] = (), **extra: Any) -> Charter:
    fields: dict[str, Any] = {
        "model": "fast",
        "budget_usd": 5.0,
        "output_schema": {"type": "object", "required": ["answer"]},
        **extra,
    }
    return Charter(name=name, capabilities=(name,), tools=tools, **fields)


def context_event(
    bus: Bus, tenant: str, agent: str, goal_id: str, task_id: str, text: str = "Do the task."
) -> Event[ContextReady]:
    data = ContextReady(
        task_id=task_id,
        goal_id=goal_id,
        agent=agent,
        step_id="s1",
        messages=({"role": "system", "content": f"agent: {agent}"}, {"role": "user", "content": text}),
        manifest=ContextManifest(charter=f"{agent}@1"),
    )
    return bus.new(data, tenant=tenant, correlationid=goal_id)


async def no_snapshot(progress: Any) -> None:
    return None
