"""Plans: from a declared workflow file, or from an LLM planner whose structured output is
validated against the plan schema and checked as a DAG.

The planner's model calls are governed like a specialist's (:class:`GovernedModel`): each is put
to the policy service first as a ``model_call`` of the agent ``planner`` with its cost estimate
(fail closed: no answer is a denial), the budget reservation is settled with litellm's real cost
afterwards, and a denial ends planning with :class:`PlanDenied`. A policy service that cannot
decide now (restarting, or its store down) is waited out as tasks wait it out — asked again with
backoff, up to the goal's deadline — instead of ending the goal."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

import yaml
from agentos_kernel import control
from agentos_kernel.llm import LLM, ModelCallFailed
from agentos_kernel.policy import PolicyClient, estimate_cost, model_prices, retryable
from agentos_schemas import Event
from agentos_schemas.events import ModelCall, PlanStep
from agentos_schemas.events.goals import FailureCode
from agentos_schemas.rpc import PolicyDecision, PolicyRequest
from pydantic import BaseModel, Field, ValidationError

#: The principal the planner's model calls are decided for (``agent:planner``).
PLANNER_AGENT = "planner"


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
    paths = (
        sorted(folder.glob("*.yaml"))
        if folder
        else sorted(
            (p for p in resources.files("agentos_orchestrator.workflows").iterdir() if p.name.endswith(".yaml")),
            key=lambda p: p.name,  # a Traversable need not be orderable (a zipfile.Path is not)
        )
    )
    for path in paths:
        wf = Workflow.model_validate(yaml.safe_load(path.read_text()))
        check_dag(wf.steps, None)
        found[wf.name] = wf
    return found


def check_intent(steps: list[PlanStep] | tuple[PlanStep, ...], required: str | None) -> None:
    """A goal whose intent names a capability must give its work to that capability."""
    if required and not any(s.capability == required for s in steps):
        raise PlanError(
            f"the goal needs capability {required!r}: at least one step must have it "
            f"(the plan has {sorted({s.capability for s in steps})})"
        )


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
Available capabilities: {capabilities}{required}
Answer with JSON matching this schema: {schema}"""


class PlanDenied(PlanError):
    """The policy refused a planner model call; ``code`` is the goal's failure code."""

    def __init__(self, decision: PolicyDecision) -> None:
        self.decision = decision
        # A decision that could not be had until the wait ended: the goal's deadline passed.
        self.code: FailureCode = (
            "budget" if decision.code == "budget" else "deadline" if retryable(decision) else "planner_failed"
        )
        super().__init__(
            f"policy denied the planner's model call ({decision.code}, policy "
            f"{decision.policy_version}, decision {decision.decision_id}): "
            f"{'; '.join(decision.reasons) or decision.decision}"
        )


class ModelClient(Protocol):
    async def complete(
        self, chain: list[str], messages: list[dict[str, Any]], **kwargs: Any
    ) -> tuple[Any, list[ModelCall]]: ...


@dataclass
class GovernedModel:
    """The planner's model calls for one plan revision of one goal, each decided by the policy first.

    ``decide_and_wait`` waits out a ``require_approval`` and a policy that cannot decide now
    (each up to ``approval_wait_s``, the time left to the goal's deadline); anything but an allow
    raises :class:`PlanDenied` before the model is called. An allowed call's
    reservation is settled with the real cost of every attempt (failed ones too).
    """

    llm: LLM
    policy: PolicyClient
    tenant: str
    goal_id: str
    revision: int
    cause: Event[Any] | None = None
    approval_wait_s: float | None = None
    attempts: int = 0

    @property
    def task_id(self) -> str:
        return f"{self.goal_id}/plan/r{self.revision}"

    def request(self, chain: list[str], messages: list[dict[str, Any]], max_tokens: int) -> PolicyRequest:
        usd, tokens = estimate_cost(messages, *model_prices(self.llm, chain), max_tokens)
        return PolicyRequest(
            tenant=self.tenant,
            principal=f"agent:{PLANNER_AGENT}",
            action="model_call",
            resource=chain[0],
            agent=PLANNER_AGENT,
            goal_id=self.goal_id,
            task_id=self.task_id,
            args={"fallbacks": ",".join(chain[1:])},
            estimated_cost_usd=usd,
            estimated_tokens=tokens,
            call_id=f"{self.task_id}:model:{self.attempts}",
        )

    async def complete(
        self, chain: list[str], messages: list[dict[str, Any]], **kwargs: Any
    ) -> tuple[Any, list[ModelCall]]:
        self.attempts += 1
        kwargs.setdefault("max_tokens", self.policy.settings.est_output_tokens)  # the reservation bounds it
        request = self.request(chain, messages, kwargs["max_tokens"])
        decision = await self.policy.decide_and_wait(
            request, self.cause, wait_s=self.approval_wait_s, unavailable_wait_s=self.approval_wait_s
        )
        if decision.decision != "allow":
            raise PlanDenied(decision)
        work = control.Work(agent=PLANNER_AGENT, workflow=self.goal_id, tenant=self.tenant)
        try:
            with control.working_on(work):  # kill switches for the planner, the goal or its tenant
                response, calls = await self.llm.complete(chain, messages, **kwargs)
        except ModelCallFailed as exc:
            await self.policy.settle(decision, request, exc.calls, self.cause)
            raise
        await self.policy.settle(decision, request, calls, self.cause)
        return response, calls


def _planner_messages(
    goal_text: str, capabilities: set[str], failures: list[str], required: str | None, schema: dict[str, Any]
) -> list[dict[str, Any]]:
    """The planner's first conversation: the prompt with the capabilities (and the one the goal's
    intent requires) and the plan schema, then the goal with the last failures to plan around."""
    need = (
        f"\nRequired capability: {required} (the goal's intent; give its work to this capability)" if required else ""
    )
    return [
        {
            "role": "system",
            "content": PLANNER_PROMPT.format(
                capabilities=", ".join(sorted(capabilities)), required=need, schema=json.dumps(schema)
            ),
        },
        {
            "role": "user",
            "content": f"Goal: {goal_text}"
            + ("\nEarlier attempts went wrong; plan around this:\n- " + "\n- ".join(failures[-5:]) if failures else ""),
        },
    ]


async def llm_plan(
    llm: ModelClient,
    chain: list[str],
    goal_text: str,
    capabilities: set[str],
    failures: list[str],
    attempts: int = 3,
    required: str | None = None,
) -> tuple[list[PlanStep], list[ModelCall]]:
    """Ask the planner model; invalid output is sent back with the error, up to ``attempts`` times.
    With ``required`` (the goal's intent) a plan without a step of that capability is invalid."""
    schema = PlanOutput.model_json_schema()
    messages = _planner_messages(goal_text, capabilities, failures, required, schema)
    calls: list[ModelCall] = []
    for _ in range(attempts):
        try:
            response, made = await llm.complete(
                chain,
                messages,
                response_format={"type": "json_schema", "json_schema": {"name": "plan", "schema": schema}},
            )
        except ModelCallFailed as exc:
            calls += exc.calls
            raise PlanError(str(exc)) from None
        calls += made
        content = response.choices[0].message.content or ""
        try:
            plan = PlanOutput.model_validate_json(content)
            check_dag(plan.steps, capabilities)
            check_intent(plan.steps, required)
            return plan.steps, calls
        except (ValidationError, PlanError) as exc:
            messages += [
                {"role": "assistant", "content": content},
                {"role": "user", "content": f"That plan is invalid: {str(exc)[:800]}. Answer again."},
            ]
    raise PlanError(f"no valid plan after {attempts} attempts")
