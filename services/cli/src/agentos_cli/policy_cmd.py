"""Governance commands: `agentos policy test|simulate`, `agentos budget`, `agentos approvals`,
`agentos approve`, `agentos reject` and `agentos takeover` — thin over the policy service's
request/reply subjects and the event log."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from agentos_cli.errors import fail
from agentos_kernel import AgentOSError, Bus, BusUnavailable
from agentos_policy.cases import run_suite
from agentos_policy.model import PolicyError, default_policy_dir, load_policy
from agentos_policy.simulate import parse_since, simulate
from agentos_schemas import rpc as r
from agentos_schemas.events import TaskAssigned, TaskCompleted
from agentos_schemas.money import usd
from rich.console import Console
from rich.table import Table

policy_app = typer.Typer(help="Policies as code: test the shipped cases, simulate against recorded decisions.",
                         no_args_is_help=True)
console = Console()
err = Console(stderr=True)
T = TypeVar("T")

PolicyDir = Annotated[Path | None, typer.Option("--policy-dir", help="Policy folder (default: the shipped one)")]
Tenant = Annotated[str | None, typer.Option(help="Only this tenant")]
AsUser = Annotated[str, typer.Option("--as", help="Who you are (a human named in the policy)")]


def _run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(coro)
    except (AgentOSError, PolicyError, ValueError) as exc:
        fail(exc)


async def _bus() -> Bus:
    from agentos_cli.main import connected_bus

    return await connected_bus("cli-policy")


async def _ask(subject: str, payload: Any, reply: type[T]) -> T:
    bus = await _bus()
    try:
        return await bus.request(subject, payload, reply, timeout=5.0)  # type: ignore[type-var]
    except BusUnavailable:
        raise AgentOSError("the policy service did not answer (is it running? see `agentos status`)") from None
    finally:
        await bus.close()


@policy_app.command("test")
def test_cmd(policy_dir: PolicyDir = None) -> None:
    """Run the cases in tests.yaml next to the policy; exit 1 if any decision differs."""
    folder = policy_dir or default_policy_dir()
    try:
        policy, results = run_suite(folder)
    except PolicyError as exc:
        fail(exc)
    for res in results:
        mark = "[green]PASS[/]" if res.passed else "[bold red]FAIL[/]"
        line = f"{mark} {res.name}" + ("" if res.passed else f": expected {res.expected}, got {res.got} — "
                                                           f"{'; '.join(res.reasons)}")
        console.print(line, highlight=False, soft_wrap=True)
    failed = sum(not x.passed for x in results)
    console.print(f"policy {policy.version}: {len(results) - failed} passed, {failed} failed", highlight=False)
    if failed:
        raise typer.Exit(1)


@policy_app.command("simulate")
def simulate_cmd(
    since: Annotated[str, typer.Option(help="From: 30m, 24h, 7d or an ISO date/time")],
    policy_dir: PolicyDir = None,
    tenant: Tenant = None,
) -> None:
    """Replay recorded decisions against another policy version and list every one that would change."""
    async def go() -> None:
        policy = load_policy(policy_dir or default_policy_dir())
        bus = await _bus()
        try:
            report = await simulate(bus, policy, parse_since(since), tenant)
        finally:
            await bus.close()
        changes = report.changes or []
        table = Table("time", "decision", "tenant", "agent", "action", "on", "recorded", "would be", "why")
        for c in changes:
            table.add_row(c.at.strftime("%Y-%m-%d %H:%M:%S"), c.decision_id, c.tenant, c.agent, c.action,
                          c.resource, c.before, c.after, "; ".join(c.reasons))
        if changes:
            console.print(table)
        since_ledger = report.ledger_from.strftime("%Y-%m-%d") if report.ledger_from else "-"
        console.print(f"policy {policy.version}: {report.read} recorded decisions replayed, {len(changes)} would "
                      f"change ({report.budget_changes} on budgets; balances rebuilt from the log since "
                      f"{since_ledger})", highlight=False)
    _run(go())


def budget(tenant: Tenant = None,
           as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False) -> None:
    """Spend against caps (per agent, team and tenant; today and this month)."""
    report = _run(_ask(r.POLICY_BUDGET, r.BudgetQuery(tenant=tenant), r.BudgetReport))
    if report.error:
        err.print(f"[bold red]agentos: error:[/] {report.error}")
        raise typer.Exit(2)
    if as_json:
        console.print_json(report.model_dump_json())
        return
    table = Table("tenant", "scope", "name", "period", "spent $", "reserved $", "cap $", "tokens", "cap tokens")
    for ln in report.lines:
        table.add_row(ln.tenant, ln.scope, ln.name, ln.period_key, usd(ln.used_usd, symbol=False),
                      usd(ln.reserved_usd, symbol=False), "-" if ln.cap_usd is None else usd(ln.cap_usd, symbol=False),
                      str(ln.used_tokens + ln.reserved_tokens), "-" if ln.cap_tokens is None else str(ln.cap_tokens))
    console.print(table)
    console.print(f"policy {report.policy_version}", highlight=False)


def approvals(tenant: Tenant = None,
              as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False) -> None:
    """Approvals waiting for a human."""
    reply = _run(_ask(r.POLICY_APPROVALS, r.ApprovalList(tenant=tenant), r.ApprovalListReply))
    if as_json:
        console.print_json(reply.model_dump_json())
        return
    table = Table("id", "tenant", "risk", "votes", "role", "agent", "task", "what", "expires")
    for a in reply.approvals:
        table.add_row(a.approval_id, a.tenant, a.risk, f"{len(a.approved_by)}/{a.needed}", a.approver_role,
                      a.agent, a.task_id, a.summary, a.expires_at.strftime("%H:%M:%S") if a.expires_at else "")
    console.print(table)
    console.print(f"{len(reply.approvals)} pending", highlight=False)


def _vote(approval_id: str, user: str, verdict: str, reason: str) -> None:
    vote = r.ApprovalVote(approval_id=approval_id, user=user, verdict=verdict, reason=reason)  # type: ignore[arg-type]
    reply = _run(_ask(r.POLICY_VOTE, vote, r.ApprovalReply))
    if reply.error:
        err.print(f"[bold red]agentos: {verdict} refused:[/] {reply.error}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    a = reply.approval
    assert a is not None
    state = a.status if a.status != "pending" else f"pending ({len(a.approved_by)} of {a.needed} approvals)"
    console.print(f"approval {a.approval_id}: {state}", highlight=False)


def approve(approval_id: str, user: AsUser,
            reason: Annotated[str, typer.Option(help="Why (kept in the log)")] = "") -> None:
    """Approve a pending request (high risk needs two different people)."""
    _vote(approval_id, user, "approve", reason)


def reject(approval_id: str, user: AsUser, reason: Annotated[str, typer.Option(help="Why (kept in the log)")]) -> None:
    """Reject a pending request; the agent is told it was denied."""
    _vote(approval_id, user, "reject", reason)


def _answer(text: str) -> dict[str, Any]:
    path = Path(text)
    raw = path.read_text() if not text.lstrip().startswith("{") and path.is_file() else text
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise typer.BadParameter(f"--answer is neither a JSON object nor a file holding one: {exc}") from None
    if not isinstance(value, dict):
        raise typer.BadParameter("--answer must be a JSON object")
    return value


def takeover(task_id: str, user: AsUser,
             answer: Annotated[str, typer.Option(help="The human's answer: a JSON object or a file holding one")],
             tenant: Tenant = None) -> None:
    """Answer a task yourself: publishes task.completed for it, with you as the agent (principal user:<you>)."""
    output = _answer(answer)
    _run(_takeover(task_id, user, output, tenant))


async def _takeover(task_id: str, user: str, output: dict[str, Any], tenant: str | None) -> None:
    from agentos_policy.simulate import recorded_of

    req = r.PolicyRequest(tenant=tenant or "default", principal=f"user:{user}", action="outside_action",
                          resource="task:takeover", task_id=task_id)
    bus = await _bus()
    try:
        assigned = await recorded_of(bus, TaskAssigned, task_id, tenant)
        if assigned is None:
            raise AgentOSError(f"no task.assigned for task {task_id!r} in the log")
        req = req.model_copy(update={"tenant": assigned.tenant, "goal_id": assigned.data.goal_id})
        decision = await bus.request(r.POLICY_DECIDE, req, r.PolicyDecision, timeout=5.0)
        if decision.decision != "allow":
            raise AgentOSError(f"takeover denied: {'; '.join(decision.reasons)}")
        data = assigned.data
        done = TaskCompleted(task_id=task_id, goal_id=data.goal_id, step_id=data.step_id, agent=f"user:{user}",
                             output=output)
        await bus.publish(bus.new(done, cause=assigned, principal=f"user:{user}"))
    finally:
        await bus.close()
    console.print(f"task {task_id} answered by {user}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.add_typer(policy_app, name="policy")
    for command in (budget, approvals, approve, reject, takeover):
        app.command()(command)
