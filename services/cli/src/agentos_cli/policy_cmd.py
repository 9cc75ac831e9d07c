"""Governance commands: `agentos policy test|simulate`, `agentos budget`, `agentos approvals`,
`agentos approve`, `agentos reject` and `agentos takeover` — thin over the policy service's
request/reply subjects and the event log."""

from __future__ import annotations

import json
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias, TypeVar

import typer

from agentos_cli import output
from agentos_cli.connect import connected_bus, run
from agentos_cli.errors import fail

if TYPE_CHECKING:
    from agentos_kernel import Bus
    from pydantic import BaseModel

policy_app = typer.Typer(
    help="Policies as code: test the shipped cases, simulate against recorded decisions.", no_args_is_help=True
)
console = output.console()
err = output.console(stderr=True)
T = TypeVar("T")
M = TypeVar("M", bound="BaseModel")

PolicyDir: TypeAlias = Annotated[
    Path | None, typer.Option("--policy-dir", help="Policy folder (default: the shipped one)")
]
Tenant: TypeAlias = Annotated[str | None, typer.Option(help="Only this tenant")]
AsUser: TypeAlias = Annotated[str, typer.Option("--as", help="Who you are (a human named in the policy)")]


def _run(coro: Coroutine[Any, Any, T]) -> T:
    from agentos_policy.model import PolicyError

    return run(coro, PolicyError, ValueError)


async def _bus() -> Bus:
    return await connected_bus("cli-policy")


async def _ask(subject: str, payload: BaseModel, reply: type[M]) -> M:
    from agentos_kernel import BusUnavailable, Unavailable

    bus = await _bus()
    try:
        return await bus.request(subject, payload, reply, timeout=5.0)
    except BusUnavailable:
        raise Unavailable("the policy service", "it did not answer: is it running? see `agentos status`") from None
    finally:
        await bus.close()


@policy_app.command("test")
def test_cmd(policy_dir: PolicyDir = None) -> None:
    """Run the cases in tests.yaml next to the policy; exit 1 if any decision differs."""
    from agentos_policy.cases import run_suite
    from agentos_policy.model import PolicyError, default_policy_dir

    folder = policy_dir or default_policy_dir()
    try:
        policy, results = run_suite(folder)
    except PolicyError as exc:
        fail(exc)
    dash = output.glyph(console, "\u2014", "-")
    for res in results:
        mark = "[green]PASS[/]" if res.passed else "[bold red]FAIL[/]"
        line = f"{mark} {res.name}" + (
            "" if res.passed else f": expected {res.expected}, got {res.got} {dash} {'; '.join(res.reasons)}"
        )
        console.print(line, highlight=False, soft_wrap=True)
    failed = sum(not x.passed for x in results)
    console.print(f"policy {policy.version}: {len(results) - failed} passed, {failed} failed", highlight=False)
    if failed:
        raise typer.Exit(1)


@policy_app.command("simulate")
def simulate_cmd(
    since: Annotated[str, typer.Option(help="From: 30m, 24h, 7d or an ISO date/time")],
    policy_dir: Annotated[
        Path | None, typer.Option("--policy-dir", help="The candidate policy folder (default: the policy in force)")
    ] = None,
    tenant: Tenant = None,
) -> None:
    """Replay recorded decisions against a policy version (by default the one in force) and list
    every one that would change."""
    from agentos_cli.policy_view import in_force, simulate_report

    async def go() -> None:
        from agentos_policy.model import load_policy
        from agentos_policy.simulate import parse_since, simulate

        when = parse_since(since)
        bus = await _bus()
        try:
            folder, which = (policy_dir, "given by --policy-dir") if policy_dir else await in_force(bus)
            policy = load_policy(folder)
            console.print(
                f"simulating policy {policy.version} from {folder} ({which})", highlight=False, soft_wrap=True
            )
            report = await simulate(bus, policy, when, tenant)
        finally:
            await bus.close()
        simulate_report(console, policy.version, report)

    _run(go())


def budget(tenant: Tenant = None, fmt: output.Format = "table", as_json: output.Json = False) -> None:
    """Spend against caps (per agent, team and tenant; today and this month)."""
    from agentos_schemas import rpc as r

    from agentos_cli.policy_view import budget_section

    form = output.chosen(fmt, as_json)
    report = run(_ask(r.POLICY_BUDGET, r.BudgetQuery(tenant=tenant), r.BudgetReport))
    if report.error:
        fail(report.error)
    output.emit(
        console,
        [budget_section(report)],
        form,
        document=report.model_dump(mode="json"),
        notes=[f"policy {report.policy_version}"],
    )


def approvals(tenant: Tenant = None, fmt: output.Format = "table", as_json: output.Json = False) -> None:
    """Approvals waiting for a human, each with the command that approves it."""
    from agentos_schemas import rpc as r

    from agentos_cli.policy_view import approvals_section

    form = output.chosen(fmt, as_json)
    reply = run(_ask(r.POLICY_APPROVALS, r.ApprovalList(tenant=tenant), r.ApprovalListReply))
    if reply.error:
        fail(reply.error)
    output.emit(
        console,
        [approvals_section(reply)],
        form,
        document=reply.model_dump(mode="json"),
        notes=[
            f"{len(reply.approvals)} pending"
            + (
                "; approve with `agentos approve <id> --as <user>` (you, as the policy names you)"
                if reply.approvals
                else ""
            )
        ],
    )


def _vote(approval_id: str, user: str, verdict: Literal["approve", "reject"], reason: str) -> None:
    from agentos_schemas import rpc as r

    vote = r.ApprovalVote(approval_id=approval_id, user=user, verdict=verdict, reason=reason)
    reply = run(_ask(r.POLICY_VOTE, vote, r.ApprovalReply))
    if reply.error:
        err.print(f"[bold red]agentos: {verdict} refused:[/] {reply.error}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    a = reply.approval
    assert a is not None
    state = a.status if a.status != "pending" else f"pending ({len(a.approved_by)} of {a.needed} approvals)"
    console.print(f"approval {a.approval_id}: {state}", highlight=False)


def approve(
    approval_id: str, user: AsUser, reason: Annotated[str, typer.Option(help="Why (kept in the log)")] = ""
) -> None:
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


def takeover(
    task_id: str,
    user: AsUser,
    answer: Annotated[str, typer.Option(help="The human's answer: a JSON object or a file holding one")],
    tenant: Tenant = None,
) -> None:
    """Answer a task yourself: publishes task.completed for it, with you as the agent (principal user:<you>)."""
    given = _answer(answer)
    _run(_takeover(task_id, user, given, tenant))


async def _takeover(task_id: str, user: str, output: dict[str, Any], tenant: str | None) -> None:
    from agentos_kernel import InvalidInput, Refused
    from agentos_policy.simulate import recorded_of
    from agentos_schemas import rpc as r
    from agentos_schemas.events import TaskAssigned, TaskCompleted

    req = r.PolicyRequest(
        tenant=tenant or "default",
        principal=f"user:{user}",
        action="outside_action",
        resource="task:takeover",
        task_id=task_id,
    )
    bus = await _bus()
    try:
        assigned = await recorded_of(bus, TaskAssigned, task_id, tenant)
        if assigned is None:
            raise InvalidInput(f"no task.assigned for task {task_id!r} in the log")
        req = req.model_copy(update={"tenant": assigned.tenant, "goal_id": assigned.data.goal_id})
        decision = await bus.request(r.POLICY_DECIDE, req, r.PolicyDecision, timeout=5.0)
        if decision.decision != "allow":
            raise Refused(f"takeover denied: {'; '.join(decision.reasons)}")
        data = assigned.data
        done = TaskCompleted(
            task_id=task_id, goal_id=data.goal_id, step_id=data.step_id, agent=f"user:{user}", output=output
        )
        await bus.publish(bus.new(done, cause=assigned, principal=f"user:{user}"))
    finally:
        await bus.close()
    console.print(f"task {task_id} answered by {user}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.add_typer(policy_app, name="policy")
    for command in (budget, approvals, approve, reject, takeover):
        app.command()(command)
