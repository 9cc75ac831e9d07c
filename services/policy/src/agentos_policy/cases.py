"""``agentos policy test``: run the cases shipped next to a policy and report each one."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentos_schemas import new_event_id
from agentos_schemas.rpc import PolicyRequest

from agentos_policy.engine import Verdict, evaluate
from agentos_policy.model import Case, Policy, load_policy, load_suite
from agentos_policy.state import Recorded, State

CASE_DEFAULTS = {"tenant": "acme", "goal_id": "g1", "task_id": "t1"}


@dataclass(frozen=True)
class CaseResult:
    """One case's outcome."""

    name: str
    passed: bool
    expected: str
    got: str
    reasons: tuple[str, ...]


def case_request(fields: dict[str, Any]) -> PolicyRequest:
    """A request from a case's fields, with the case defaults filled in."""
    data = {**CASE_DEFAULTS, **fields}
    data.setdefault("principal", f"agent:{data.get('agent', '')}")
    return PolicyRequest.model_validate(data)


def decide_and_record(policy: Policy, state: State, request: PolicyRequest, now: float) -> Verdict:
    """Evaluate and fold the decision into ``state``, as the service does."""
    verdict = evaluate(policy, request, state, now)
    state.record(Recorded(new_event_id(), request, verdict.decision, verdict.data_class, now))
    return verdict


def run_case(policy: Policy, case: Case) -> CaseResult:
    """Evaluate one case with its history folded in first."""
    state, now = State(), time.time()
    for earlier in case.history:
        decide_and_record(policy, state, case_request(earlier), now)
    verdict = evaluate(policy, case_request(case.request), state, now)
    got = f"{verdict.decision}/{verdict.code}"
    expected = case.expect if case.code is None else f"{case.expect}/{case.code}"
    passed = verdict.decision == case.expect and (case.code is None or verdict.code == case.code)
    return CaseResult(case.name, passed, expected, got, verdict.reasons)


def run_suite(folder: Path) -> tuple[Policy, list[CaseResult]]:
    """Load the policy and its cases from ``folder`` and run every case."""
    policy = load_policy(folder)
    return policy, [run_case(policy, case) for case in load_suite(folder).cases]
