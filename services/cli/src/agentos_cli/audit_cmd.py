"""`agentos audit …`: the analysts' and auditors' commands, thin over :mod:`agentos_audit`.

They read the projection in Postgres (and, for ``verify`` and ``rebuild``, the log in NATS) of
the running AgentOS (`agentos up`) or of ``AGENTOS_DATABASE_URL`` / ``AGENTOS_NATS_URL``.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeAlias

import typer

from agentos_cli import output
from agentos_cli.audit_access import (
    kernel_settings,
    parse_time,
    run_command,
    schema_name,
    with_bus_and_pool,
    with_pool,
)
from agentos_cli.errors import fail

if TYPE_CHECKING:
    import asyncpg
    from agentos_kernel import Bus

app = typer.Typer(help="Audit trail: verify, query, trace, replay, export.", no_args_is_help=True)
console = output.console()
err = output.console(stderr=True)

Schema: TypeAlias = Annotated[
    str | None, typer.Option(help="Projection schema (default AGENTOS_AUDIT_SCHEMA_NAME or audit)")
]
Tenant: TypeAlias = Annotated[str | None, typer.Option(help="Only this tenant")]
Since: TypeAlias = Annotated[str | None, typer.Option(help="From: 7d, 24h, 30m or an ISO date/time")]
Until: TypeAlias = Annotated[str | None, typer.Option(help="Before: 7d, 24h, 30m or an ISO date/time")]
Fmt: TypeAlias = output.Format
AsJson: TypeAlias = output.Json


def _check_format(fmt: str, allowed: tuple[str, ...]) -> None:
    if fmt not in allowed:
        err.print(f"[bold red]agentos: error:[/] --format must be one of {', '.join(allowed)}")
        raise typer.Exit(2)


def _short(value: Any) -> str:
    from rich.markup import escape

    text = output.cell(value)
    parts = text.split(".")
    return escape(".".join(parts[2:-1]) if text.startswith("dev.agentos.") and len(parts) >= 5 else text)


def _section(title: str, rows: list[dict[str, Any]]) -> output.Section:
    """Event types shown short in tables (``task.completed``); JSON and CSV keep them whole."""
    return output.Section(title, rows, empty="(no rows)", cells=dict.fromkeys(rows[0] if rows else (), _short))


def _rows(fetch: Callable[[asyncpg.Pool], Awaitable[list[dict[str, Any]]]], fmt: str, title: str) -> None:
    rows = run_command(with_pool(fetch))
    output.emit(console, [_section(title, rows)], fmt)


@app.command()
def query(
    agent: Annotated[str | None, typer.Option(help="Agent name")] = None,
    type: Annotated[str | None, typer.Option(help="Event type: task.completed or the full type")] = None,
    since: Since = None,
    until: Until = None,
    goal: Annotated[str | None, typer.Option(help="Goal id (goal_id or correlation id)")] = None,
    tool: Annotated[str | None, typer.Option(help="A tool the event names")] = None,
    model: Annotated[str | None, typer.Option(help="A model the event's usage names")] = None,
    tag: Annotated[str | None, typer.Option(help="Classification tag, e.g. personal_data, pii:email")] = None,
    tenant: Tenant = None,
    limit: Annotated[int, typer.Option(help="Most rows (newest first)")] = 100,
    fmt: Fmt = "table",
    as_json: AsJson = False,
    schema: Schema = None,
) -> None:
    """Events matching every filter given, newest first."""
    from agentos_audit import queries as q

    fmt = output.chosen(fmt, as_json)
    if type is not None and not q.types_named(type):
        fail(
            f"event type {type!r} is not in the catalogue (e.g. task.completed, or a full type "
            "dev.agentos.task.completed.v1)"
        )
    filters = q.Filters(
        tenant=tenant,
        agent=agent,
        type=type,
        since=parse_time(since),
        until=parse_time(until),
        goal=goal,
        tool=tool,
        model=model,
        tag=tag,
        limit=limit,
    )
    _rows(lambda pool: q.query_events(pool, schema_name(schema), filters), fmt, "events")


@app.command("personal-data")
def personal_data(
    since: Since = "7d", tenant: Tenant = None, fmt: Fmt = "table", as_json: AsJson = False, schema: Schema = None
) -> None:
    """Which agents touched personal data (events classified personal_data) since --since."""
    from agentos_audit import queries as q

    fmt = output.chosen(fmt, as_json)
    when = parse_time(since)
    _rows(
        lambda pool: q.personal_data(pool, schema_name(schema), when, tenant),
        fmt,
        f"agents with personal data since {since}",
    )


@app.command()
def denied(
    since: Since = None, tenant: Tenant = None, fmt: Fmt = "table", as_json: AsJson = False, schema: Schema = None
) -> None:
    """Policy denials: denied decisions, rejected or expired approvals, tasks failed by a policy (the
    note on stderr says what counts)."""
    from agentos_audit import queries as q

    fmt = output.chosen(fmt, as_json)
    err.print(f"[dim]{q.POLICY_NOTE}[/]", soft_wrap=True)
    when = parse_time(since)
    _rows(lambda pool: q.denied(pool, schema_name(schema), when, tenant), fmt, "policy denials")


@app.command()
def cost(goal: str, tenant: Tenant = None, fmt: Fmt = "table", as_json: AsJson = False, schema: Schema = None) -> None:
    """A goal's model calls, tokens and spend per agent and model."""
    from agentos_audit import queries as q

    fmt = output.chosen(fmt, as_json)
    _rows(lambda pool: q.cost(pool, schema_name(schema), goal, tenant), fmt, f"cost of goal {goal}")


@app.command("allowed-by")
def allowed_by(
    ref: Annotated[str, typer.Argument(help="An event id, or an action, tool, model or resource")],
    since: Since = None,
    tenant: Tenant = None,
    fmt: Fmt = "table",
    as_json: AsJson = False,
    schema: Schema = None,
) -> None:
    """Which policy decisions and versions let an event or an action through."""
    from agentos_audit import queries as q

    fmt = output.chosen(fmt, as_json)
    when = parse_time(since)
    answer = run_command(with_pool(lambda pool: q.allowed_by(pool, schema_name(schema), ref, tenant, when)))
    shown = [_section(f"event {ref}", answer["rows"])] if answer["rows"] else []
    shown.append(_section(f"policy decisions about {ref}", answer["decisions"]))
    output.emit(console, shown, fmt, document={"event": answer["rows"], "decisions": answer["decisions"]})
    if not answer["decisions"]:
        err.print(
            f"no policy decision about {ref!r} is in this log (none was asked for it, or it happened "
            "before the policy service ran)",
            soft_wrap=True,
        )


@app.command()
def trace(goal: str, tenant: Tenant = None, fmt: Fmt = "table", as_json: AsJson = False, schema: Schema = None) -> None:
    """A goal's events as a causal tree, and per task: context, charter, models, tokens, cost, trace id."""
    from agentos_audit import queries as q
    from agentos_audit import render
    from agentos_audit.trace import build_tree

    fmt = output.chosen(fmt, as_json)
    rows = run_command(with_pool(lambda pool: q.goal_events(pool, schema_name(schema), goal, tenant)))
    if not rows:
        err.print(f"no events of goal {goal!r} in the projection")
        raise typer.Exit(1)
    tasks = render.trace_tasks(rows)
    if fmt == "table":
        output.show(console, render.trace_tree(goal, build_tree(rows)))
    output.emit(console, [_section("tasks", tasks)], fmt)


@app.command()
def verify(
    public_key: Annotated[Path | None, typer.Option(help="Trusted public key (default: the key file's .pub)")] = None,
    limit: Annotated[int, typer.Option(help="Stop after this many divergences")] = 20,
    max_behind: Annotated[
        int,
        typer.Option(
            help="Fail when the projection ends more than this many messages "
            "before the log's last sequence at the start"
        ),
    ] = 0,
    wait: Annotated[float, typer.Option(help="Seconds to let the projection catch up first")] = 10.0,
    witness: Annotated[
        Path | None, typer.Option(help="Witness file to check too (default AGENTOS_AUDIT_WITNESS_FILE)")
    ] = None,
    schema: Schema = None,
) -> None:
    """Recompute the chain and the Merkle tree from the log and Postgres, re-derive every row, check
    every checkpoint (Postgres, log, witness); fail when behind the log by more than --max-behind."""
    from agentos_audit import render
    from agentos_audit.settings import AuditSettings
    from agentos_audit.signing import load_public, public_path
    from agentos_audit.verify import verify as verify_schema

    path, seen = public_key or public_path(AuditSettings().key_path(kernel_settings().state_dir)), witness
    seen = seen or AuditSettings().witness_file
    trusted = load_public(path) if path.exists() else None
    if trusted is None:
        err.print(f"[yellow]no public key at {path}: checkpoint signatures are not checked[/]")
    report = run_command(
        with_bus_and_pool(
            lambda bus, pool: verify_schema(
                bus, pool, schema_name(schema), trusted, limit=limit, max_behind=max_behind, wait_s=wait, witness=seen
            )
        )
    )
    for line in render.verify_lines(report):
        console.print(line, highlight=False, soft_wrap=True)
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def rebuild(
    keep: Annotated[bool, typer.Option(help="Keep the rebuilt schema instead of dropping it")] = False,
    target: Annotated[str | None, typer.Option(help="Schema to rebuild into (default <schema>_rebuild)")] = None,
    workers: Annotated[int, typer.Option(help="Validate in this many worker processes (0: inline)")] = 0,
    schema: Schema = None,
) -> None:
    """Project the log again into a fresh schema and check it equals the live projection."""
    from agentos_audit import render
    from agentos_audit.rebuild import rebuild as rebuild_schema

    report = run_command(
        with_bus_and_pool(
            lambda bus, pool: rebuild_schema(bus, pool, schema_name(schema), target, keep=keep, workers=workers)
        )
    )
    for line in render.rebuild_lines(report):
        console.print(line, highlight=False, soft_wrap=True)
    if not report.equal:
        raise typer.Exit(1)


VendorSince: TypeAlias = Annotated[
    str | None,
    typer.Option(
        help="From, by the event's own time attribute (set by its source: a vendor's time for a mapped webhook)"
    ),
]
VendorUntil: TypeAlias = Annotated[str | None, typer.Option(help="Before, by the event's own time attribute")]


def _check_export_target(fmt: str, out: Path) -> None:
    """Exit 2 for an export format other than jsonl or parquet, or parquet asked for on stdout."""
    _check_format(fmt, ("jsonl", "parquet"))
    if fmt == "parquet" and str(out) == "-":
        err.print("[bold red]agentos: error:[/] parquet needs --out FILE")
        raise typer.Exit(2)


@app.command()
def export(
    since: Annotated[
        str | None,
        typer.Option(help="From, by the log's time (when AgentOS took the event): 7d, 24h, 30m or an ISO date/time"),
    ] = None,
    until: Annotated[str | None, typer.Option(help="Before, by the log's time")] = None,
    tenant: Tenant = None,
    vendor_since: VendorSince = None,
    vendor_until: VendorUntil = None,
    fmt: Annotated[str, typer.Option("--format", help="jsonl or parquet")] = "jsonl",
    out: Annotated[Path, typer.Option(help="Output file ('-' is stdout, jsonl only)")] = Path("-"),
    schema: Schema = None,
) -> None:
    """Export the events of a time range (with their chain hashes) as JSON Lines or Parquet.

    --since/--until select by when the log took each event; --vendor-since/--vendor-until by the
    time the event itself carries (its source's clock); both may be given."""
    _check_export_target(fmt, out)
    logged, claimed = (parse_time(since), parse_time(until)), (parse_time(vendor_since), parse_time(vendor_until))

    async def go(bus: Bus | None, pool: asyncpg.Pool) -> int:
        from agentos_audit import export as export_mod

        from agentos_cli.log_seq import seq_bounds

        first, end = await seq_bounds(bus, *logged) if bus is not None else (None, None)
        rows = export_mod.records(pool, schema_name(schema), *claimed, tenant, seq_from=first, seq_to=end)
        if fmt == "parquet":
            return await export_mod.write_parquet(out, rows)
        if str(out) == "-":
            return await export_mod.write_jsonl(sys.stdout.buffer, rows)
        with out.open("wb") as f:
            return await export_mod.write_jsonl(f, rows)

    n = run_command(with_bus_and_pool(go)) if any(logged) else run_command(with_pool(lambda pool: go(None, pool)))
    err.print(f"exported {n} events", highlight=False)


@app.command()
def erase(
    subject: Annotated[
        str,
        typer.Argument(
            help="The data subject's id as events name it (e.g. a ticket's "
            "requester_id), or event:<id> for an event without one"
        ),
    ],
    tenant: Tenant = None,
    reason: Annotated[str, typer.Option(help="Why: a request reference (no personal details)")] = "",
    by: Annotated[str | None, typer.Option("--as", help="The operator, recorded as user:<name>")] = None,
) -> None:
    """Crypto-shred a data subject: destroy their key, so every personal field sealed with it reads
    [ERASED] everywhere, and record an erasure.recorded event (no personal data in it)."""
    from agentos_cli.erasure import erase_subject

    if not subject.strip():
        err.print("[bold red]agentos: error:[/] the data subject id is empty")
        raise typer.Exit(2)
    # a bad tenant (NamingError) or no NATS: one line, exit 2
    fact, event_id = run_command(erase_subject(subject, tenant=tenant, reason=reason, by=by))
    what = (
        f"key {fact.key} (revision {fact.revision}) destroyed"
        if fact.revision
        else f"no live key {fact.key} (nothing sealed since any earlier erasure)"
    )
    console.print(f"erased: {what}; recorded erasure.recorded {event_id}", highlight=False, soft_wrap=True)


@app.command()
def replay(
    goal_id: Annotated[str, typer.Argument(help="The goal to replay")],
    tenant: Annotated[str | None, typer.Option(help="The goal's tenant (narrows the read of the log)")] = None,
    mode: Annotated[
        str, typer.Option(help="recorded: the recording's answers; offline: the offline model")
    ] = "recorded",
    sandbox_tenant: Annotated[str | None, typer.Option(help="Tenant of the replay (default sandbox-<id>)")] = None,
    scenario: Annotated[Path | None, typer.Option(help="Offline mode: the scenario the offline model plays")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the replay's outcome")] = 600.0,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the sandbox's state and logs")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """Re-run a recorded goal in a sandbox and compare the outcome (exit 0 same, 1 different, 2 error)."""
    from agentos_cli import replay_cmd

    replay_cmd.replay(
        goal_id,
        tenant=tenant,
        mode=mode,
        sandbox_tenant=sandbox_tenant,
        scenario=scenario,
        timeout=timeout,
        keep=keep,
        as_json=as_json,
    )


from agentos_cli import audit_proof_cmd as audit_proof_cmd  # noqa: E402  (registers prove, checkpoint)
