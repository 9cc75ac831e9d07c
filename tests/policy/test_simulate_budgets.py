"""`agentos policy simulate` re-runs budget checks: the ledger's balances are rebuilt from the recorded
reservations and settlements, and a lower cap in a candidate policy lists exactly the model calls
it would have refused."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import yaml
from agentos_kernel import Bus, KernelSettings
from agentos_kernel.service import ServiceContext
from agentos_kernel.testing import unique
from agentos_policy.model import load_policy
from agentos_policy.simulate import month_start, simulate
from agentos_schemas.events import ModelCall
from agentos_schemas.events.policy import BudgetSettled, PolicyDecided
from agentos_schemas.rpc import PolicyDecision, PolicyRequest

from tests.policy.conftest import STRICT, ask, client, logged_at_least
from tests.policy.test_approvals import cli

ESTIMATE = 0.001
REAL = 0.0004
NEW_CAP = 0.002  # the candidate's daily cap for the agent `spender`


def candidate(folder: Path) -> Path:
    """The strict test policy with a lower cap: $0.002 a day for the agent ``spender``."""
    policy = yaml.safe_load((STRICT / "policy.yaml").read_text())
    policy["version"] = "test-lower-cap"
    policy["budgets"].append({"scope": "agent", "name": "spender", "tenant": "bud*", "period": "day", "usd": NEW_CAP})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "policy.yaml").write_text(yaml.safe_dump(policy))
    return folder


async def spend(bus: Bus, tenant: str, agent: str, n: int, settled_before: int) -> list[PolicyDecision]:
    """``n`` model calls by ``agent``, each settled at its real cost before the next is asked."""
    out = []
    for i in range(n):
        decision = await ask(
            bus,
            tenant,
            agent,
            "model_call",
            "fast",
            goal_id="g",
            task_id=f"t{i}",
            estimated_cost_usd=ESTIMATE,
            estimated_tokens=100,
        )
        assert decision.decision == "allow" and decision.reservation_id, decision.reasons
        request = PolicyRequest(
            tenant=tenant, principal=f"agent:{agent}", action="model_call", resource="fast", agent=agent
        )
        await client(bus).settle(
            decision,
            request,
            [ModelCall(model="openai/offline-fast", ok=True, input_tokens=40, output_tokens=10, cost_usd=REAL)],
        )
        await logged_at_least(bus, tenant, BudgetSettled, settled_before + len(out) + 1, timeout=15)
        out.append(decision)
    return out


async def test_a_lower_cap_lists_exactly_the_calls_it_would_deny(
    bus: Bus, settings: KernelSettings, policy_service: ServiceContext, tmp_path: Path
) -> None:
    tenant = unique("bud")
    early = await spend(bus, tenant, "spender", 2, 0)  # $0.0008 spent when the window opens
    await asyncio.sleep(0.3)
    window = dt.datetime.now(dt.UTC)
    await asyncio.sleep(0.3)
    late = await spend(bus, tenant, "spender", 4, 2)
    other = await spend(bus, tenant, "premium-user", 2, 6)  # another agent: the new cap is not his
    tool = await ask(
        bus, tenant, "spender", "tool_call", "search_documents", tool="search_documents", goal_id="g", task_id="t9"
    )
    await logged_at_least(bus, tenant, PolicyDecided, 9)
    policy = load_policy(candidate(tmp_path / "candidate"))

    # Over the whole workload: spent 0, 0.0004, 0.0008 before calls 1-3 (each fits under $0.002 with
    # its $0.001 estimate); call 4 meets 0.0012 + 0.001 > 0.002, and refused calls add nothing.
    everything = await simulate(bus, policy, dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10), tenant)
    assert everything.read == 9
    changed = [c.decision_id for c in everything.changes or []]
    assert changed == [d.decision_id for d in late[1:]], [c.reasons for c in everything.changes or []]
    for change in everything.changes or []:
        assert (change.before, change.after) == ("allow (ok)", "deny (budget)")
        assert change.agent == "spender" and change.action == "model_call"
        assert "agent 'spender'" in change.reasons[0] and "per day" in change.reasons[0]
    assert everything.budget_changes == 3
    assert not {d.decision_id for d in [*other, tool]} & set(changed)
    # Had the estimates not been replaced by the settled real costs, call 3 would be refused too.
    assert late[0].decision_id not in changed

    # From the middle: the two earlier calls are charged from the log as recorded (ledger rebuilt
    # from the start of the month), so the same calls change.
    assert everything.ledger_from == month_start(window)
    middle = await simulate(bus, policy, window, tenant)
    assert middle.read == 7
    assert [c.decision_id for c in middle.changes or []] == changed
    assert early[0].decision_id not in changed

    # Under the policy that recorded them, nothing changes: the rebuilt balances agree with the ledger.
    same = await simulate(bus, load_policy(STRICT), window - dt.timedelta(minutes=10), tenant)
    assert same.read == 9 and same.changes == []

    result = await cli(
        settings,
        "policy",
        "simulate",
        "--since",
        "10m",
        "--policy-dir",
        str(tmp_path / "candidate"),
        "--tenant",
        tenant,
    )
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())  # the line wraps at the runner's 80 columns
    assert "policy test-lower-cap: 9 recorded decisions replayed, 3 would change (3 on budgets" in said
    assert sum(1 for line in result.output.splitlines() if tenant in line and "deny (budget)" in line) == 3


async def test_a_recorded_budget_denial_a_higher_cap_would_allow_is_listed(
    bus: Bus, policy_service: ServiceContext, tmp_path: Path
) -> None:
    tenant = unique("bud")  # strict: $0.01 a day per bud* tenant
    answers = [
        await ask(
            bus,
            tenant,
            "spender",
            "model_call",
            "fast",
            goal_id="g",
            task_id=f"t{i}",
            estimated_cost_usd=0.004,
            estimated_tokens=100,
        )
        for i in range(3)
    ]
    assert [a.decision for a in answers] == ["allow", "allow", "deny"] and answers[2].code == "budget"
    await logged_at_least(bus, tenant, PolicyDecided, 3)
    policy = yaml.safe_load((STRICT / "policy.yaml").read_text())
    policy["budgets"][0]["usd"] = 0.02
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(policy))
    report = await simulate(bus, load_policy(tmp_path), dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10), tenant)
    assert [(c.decision_id, c.before, c.after) for c in report.changes or []] == [
        (answers[2].decision_id, "deny (budget)", "allow (ok)")
    ]
    assert report.budget_changes == 1
