"""Plans: from a declared workflow file, or from an LLM planner whose structured output is
validated against the plan schema and checked as a DAG."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError

from agentos_kernel.llm import LLM, ModelCallFailed
from agentos_schemas.events import ModelCall, PlanStep


class PlanError(ValueError):
    """A plan is not a valid DAG of known capabilities."""


class PlanOutput(BaseModel):
    """What the planner model must return."""

    steps: list[PlanStep] = Field(min_length=1, max_length=50)


class Workflow(BaseModel):
    name: str
    description: str = ""
    steps: list[PlanStep] = Field(min_length=1)


def load_workflows(folder: Path | None = None) -> dict[str, Workflow]:
    found: dict[str, Workflow] = {}
    paths = sorted(folder.glob("*.yaml")) if folder else sorted(
        p for p in resources.files("agentos_orchestrator.workflows").iterdir() if p.name.endswith(".yaml"))
    for path in paths:
        wf = Workflow.model_validate(yaml.safe_load(path.read_text()))
        check_dag(wf.steps, None)
        found[wf.name] = wf
    return found


def check_dag(steps: list[PlanStep], capabilities: set[str] | None) -> None:
    ids = [s.step_id for s in steps]
    if len(set(ids)) != len(ids):
        raise PlanError(f"step ids must be unique: {ids}")
    known = set(ids)
    for s in steps:
        missing = [d for d in s.depends_on if d not in known]
        if missing:
            raise PlanError(f"step {s.step_id!r} depends on unknown steps {missing}")
        if capabilities is not None and s.capability not in capabilities:
            raise PlanError(f"step {s.step_id!r} needs capability {s.capability!r}; available: {sorted(capabilities)}")
    graph = {s.step_id: set(s.depends_on) for s in steps}
    while graph:
        free = [k for k, deps in graph.items() if not deps]
        if not free:
            raise PlanError(f"plan has a dependency cycle among {sorted(graph)}")
        for k in free:
            del graph[k]
        for deps in graph.values():
            deps.difference_update(free)


PLANNER_PROMPT = """agent: planner
You are the AgentOS planner. Break the goal into a small DAG of steps. Each step has a unique
step_id (lower-case, dashes), one capability from the list, a precise instruction, depends_on
(step ids whose outputs it needs) and review (true when a QA agent must accept its output).
Independent steps must not depend on each other, so they run in parallel.
Available capabilities: {capabilities}
Answer with JSON matching this schema: {schema}"""


async def llm_plan(llm: LLM, chain: list[str], goal_text: str, capabilities: set[str],
                   failures: list[str], attempts: int = 3) -> tuple[list[PlanStep], list[ModelCall]]:
    """Ask the planner model; invalid output is sent back with the error, up to ``attempts`` times."""
    schema = PlanOutput.model_json_schema()
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": PLANNER_PROMPT.format(capabilities=", ".join(sorted(capabilities)),
                                                              schema=json.dumps(schema))},
        {"role": "user", "content": f"Goal: {goal_text}" + (
            "\nEarlier attempts went wrong; plan around this:\n- " + "\n- ".join(failures[-5:]) if failures else "")},
    ]
    calls: list[ModelCall] = []
    for _ in range(attempts):
        try:
            response, made = await llm.complete(chain, messages, response_format={
                "type": "json_schema", "json_schema": {"name": "plan", "schema": schema}})
        except ModelCallFailed as exc:
            calls += exc.calls
            raise PlanError(str(exc)) from None
        calls += made
        content = response.choices[0].message.content or ""
        try:
            plan = PlanOutput.model_validate_json(content)
            check_dag(plan.steps, capabilities)
            return plan.steps, calls
        except (ValidationError, PlanError) as exc:
            messages += [{"role": "assistant", "content": content},
                         {"role": "user", "content": f"That plan is invalid: {str(exc)[:800]}. Answer again."}]
    raise PlanError(f"no valid plan after {attempts} attempts")
