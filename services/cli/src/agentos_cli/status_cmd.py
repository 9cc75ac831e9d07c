"""`agentos status` and `agentos tail`: what the bus holds, as tables, JSON or CSV, and live.

``status`` renders whatever :func:`agentos_cli.inspect_bus.collect_status` reports: every list of
rows in it is a section, so new facts there show without a change here. It adds what waits for
a human: the pending approvals, each with the exact command that approves it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from agentos_cli import health, output
from agentos_cli.connect import connected_bus, run

if TYPE_CHECKING:
    from agentos_kernel import Bus, KernelSettings

TITLES = {
    "dependencies": "Dependencies",
    "streams": "Streams",
    "consumers": "Consumers on AGENTOS_EVENTS",
    "projections": "Projections",
    "services": "Services",
    "held": "Held work (no registered agent serves its capability)",
    "waiting": "Waiting for a human",
}
console = output.console()


def approve_command(approval_id: str) -> str:
    """The command a human runs to approve (they put their own name, as the policy's humans name them)."""
    return f"agentos approve {approval_id} --as <user>"


async def waiting(bus: Bus, timeout: float = 2.0) -> tuple[list[dict[str, Any]], str | None]:
    """Pending approvals from the policy service, or why they could not be listed."""
    from agentos_kernel import BusUnavailable
    from agentos_schemas import rpc as r

    try:
        reply = await bus.request(r.POLICY_APPROVALS, r.ApprovalList(), r.ApprovalListReply, timeout=timeout)
    except BusUnavailable:
        return [], "the policy service did not answer: pending approvals are unknown"
    if reply.error:
        return [], f"the policy service could not list approvals: {reply.error}"
    return [
        {
            "approval_id": a.approval_id,
            "tenant": a.tenant,
            "goal": a.goal_id,
            "agent": a.agent,
            "what": a.summary or f"{a.action} {a.resource}",
            "risk": a.risk,
            "votes": f"{len(a.approved_by)}/{a.needed}",
            "role": a.approver_role,
            "approve with": approve_command(a.approval_id),
        }
        for a in reply.approvals
    ], None


def sections(report: dict[str, Any]) -> list[output.Section]:
    """Each list of rows in the report as a section (consumers with their dead-letter counts)."""
    dead = report.get("dead_letters") or {}
    out = []
    for key, value in report.items():
        if not isinstance(value, list):
            continue
        rows = [dict(r) for r in value if isinstance(r, dict)]
        if key == "consumers":
            for row in rows:
                row["dead_lettered"] = dead.get(row.get("consumer"), 0)
        if key == "services":
            rows = [_service_row(r) for r in rows]
        if key == "problems" or (key in ("held", "projections") and not rows):
            continue
        out.append(
            output.Section(
                TITLES.get(key, key.replace("_", " ").capitalize()),
                rows,
                columns=COLUMNS.get(key, ()),
                cells=CELLS.get(key, {}),
                empty="(none reporting)" if key == "services" else "(none)",
            )
        )
    return out


CELLS = {"dependencies": {"ok": lambda ok: "[green]ok[/]" if ok else "[bold red]UNREACHABLE[/]"}}


COLUMNS = {
    "dependencies": ("dependency", "ok", "detail"),
    "streams": ("stream", "messages", "bytes", "first_seq", "last_seq"),
    "consumers": ("consumer", "pending", "ack_pending", "redelivered", "waiting", "dead_lettered"),
    "services": ("service", "instance", "status", "heartbeat age (s)", "consumers", "url", "details"),
    "waiting": ("approval_id", "tenant", "goal", "agent", "what", "risk", "votes", "role", "approve with"),
}
_SERVICE_SHOWN = {"service", "instance", "status", "age_s", "consumers", "url", "ts", "pid", "started"}


def _service_row(r: dict[str, Any]) -> dict[str, Any]:
    """A service's health line; what else it reports goes, as ``key=value``, into ``details``."""
    extra = {k: v for k, v in r.items() if k not in _SERVICE_SHOWN and v not in (None, "", [], {}, 0)}
    return {
        "service": r.get("service", "?"),
        "instance": r.get("instance", "?"),
        "status": r.get("status", "?"),
        "heartbeat age (s)": r.get("age_s", ""),
        "consumers": r.get("consumers", []),
        "url": r.get("url", ""),
        "details": ", ".join(f"{k}={v}" for k, v in extra.items()),
    }


def status(
    fmt: output.Format = "table",
    as_json: output.Json = False,
    stall_after: Annotated[
        float, typer.Option(help="Seconds without progress, with work waiting, that count as stalled")
    ] = health.STALL_S,
    max_lag: Annotated[int, typer.Option(help="Messages a projection may trail the log by")] = health.MAX_LAG,
) -> None:
    """Dependencies, streams, consumers and projections against the log's last sequence, dead
    letters, each service's health, and what waits for a human (with the command to approve it);
    exits 1 with a PROBLEM line for anything unhealthy."""
    form = output.chosen(fmt, as_json)
    report = run(_report(stall_after, max_lag))
    output.emit(console, sections(report), form, document=report, notes=status_notes(report))
    if report["problems"]:
        raise typer.Exit(1)


async def _report(stall_after: float, max_lag: int) -> dict[str, Any]:
    from agentos_kernel import BusUnavailable, KernelSettings
    from agentos_kernel.runtime import resolve

    from agentos_cli import inspect_bus

    try:
        bus = await connected_bus()
    except BusUnavailable as exc:
        report = await inspect_bus.unreachable_status(resolve(KernelSettings()), str(exc))
        report["waiting"], report["waiting_note"] = [], "NATS is unreachable: pending approvals are unknown"
        return report
    try:
        report = await inspect_bus.collect_status(bus, judge=True, stall_s=stall_after, max_lag=max_lag)
        if "services_unreadable" not in report:  # unread records are no sign that a service is missing
            report["problems"] += health.missing_services(report["services"], expected_services(bus.settings))
        report["waiting"], report["waiting_note"] = await waiting(bus)
    finally:
        await bus.close()
    return report


def expected_services(settings: KernelSettings) -> list[str]:
    """The services the `agentos up` of this state directory runs, if it is the AgentOS connected to."""
    from agentos_kernel.runtime import read_runtime

    info = read_runtime(settings) or {}
    if info.get("nats_url") != settings.nats_url:
        return []
    return [str(name) for name in info.get("services") or []]


def status_notes(report: dict[str, Any]) -> list[str]:
    """Scalar facts, what waits for a human, and every problem as a red line (or that all is healthy)."""
    from rich.markup import escape

    notes = [
        f"{k.replace('_', ' ')}: {escape(str(v))}"
        for k, v in report.items()
        if not isinstance(v, list | dict) and k != "waiting_note" and v is not None
    ]
    if report.get("waiting_note"):
        notes.append(f"[yellow]{escape(report['waiting_note'])}[/]")
    if report.get("waiting"):
        notes.append(
            "a goal is waiting for a human: approve with the command in its row "
            "(or `agentos reject <id> --as <user> --reason ...`)"
        )
    notes += [f"[bold red]PROBLEM[/] {escape(p)}" for p in report.get("problems", [])]
    if "problems" in report and not report["problems"]:
        notes.append("[green]all healthy[/]: dependencies reachable, consumers and projections keeping up")
    return notes


def tail(
    subject: Annotated[
        str, typer.Option(help="Subject filter, e.g. agentos.acme.goal.* or ingress.raw.acme (default: the whole log)")
    ] = ">",
    from_start: Annotated[bool, typer.Option("--all", help="Start from the first event, not from now")] = False,
    dlq: Annotated[bool, typer.Option("--dlq", help="Follow the dead-letter stream instead")] = False,
    limit: Annotated[int | None, typer.Option(help="Stop after this many events")] = None,
    idle_exit: Annotated[float | None, typer.Option(help="Stop after this many idle seconds")] = None,
) -> None:
    """Follow the event log live."""
    if dlq and subject == ">":
        subject = "dlq.agentos.>"

    async def go() -> None:
        from agentos_cli import inspect_bus

        bus = await connected_bus()
        try:
            await inspect_bus.tail(
                bus, console, subject=subject, from_start=from_start, dlq=dlq, limit=limit, idle_exit=idle_exit
            )
        finally:
            await bus.close()

    run(go())


def register(app: typer.Typer) -> None:
    """Add `status` and `tail` to ``app``."""
    for command in (status, tail):
        app.command()(command)
