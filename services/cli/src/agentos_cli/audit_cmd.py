"""`agentos audit …`: the analysts' and auditors' commands, thin over :mod:`agentos_audit`.

They read the projection in Postgres (and, for ``verify`` and ``rebuild``, the log in NATS) of
the running AgentOS (`agentos up`) or of ``AGENTOS_DATABASE_URL`` / ``AGENTOS_NATS_URL``.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import asyncpg
import typer
from agentos_audit import export as export_mod
from agentos_audit import queries as q
from agentos_audit import render
from agentos_audit.rebuild import rebuild as rebuild_schema
from agentos_audit.settings import AuditSettings
from agentos_audit.signing import load_public, public_path
from agentos_audit.trace import build_tree
from agentos_audit.verify import verify as verify_schema
from agentos_cli import replay_cmd
from agentos_cli.errors import fail
from agentos_kernel import AgentOSError, Bus, KernelSettings
from agentos_kernel.db import create_pool
from agentos_kernel.runtime import resolve
from agentos_schemas import derived_event_id
from agentos_schemas.events.erasure import ErasureRecorded
from agentos_schemas.subjects import check_token
from rich.console import Console

app = typer.Typer(help="Audit trail: verify, query, trace, replay, export.", no_args_is_help=True)
console = Console()
err = Console(stderr=True)
T = TypeVar("T")

Schema = Annotated[str | None, typer.Option(help="Projection schema (default AGENTOS_AUDIT_SCHEMA_NAME or audit)")]
Tenant = Annotated[str | None, typer.Option(help="Only this tenant")]
Since = Annotated[str | None, typer.Option(help="From: 7d, 24h, 30m or an ISO date/time")]
Until = Annotated[str | None, typer.Option(help="Before: 7d, 24h, 30m or an ISO date/time")]
Format = Annotated[str, typer.Option("--format", help="table, json or csv")]


def _settings() -> KernelSettings:
    settings = resolve(KernelSettings())
    if not settings.database_url:
        raise AgentOSError("no AgentOS is running here: start one with `agentos up` (or set AGENTOS_DATABASE_URL)")
    return settings


def _run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(coro)
    except (AgentOSError, ValueError, asyncpg.UndefinedTableError, OSError) as exc:  # OSError: e.g. --out
        fail(exc)


def _when(text: str | None) -> Any:
    try:
        return q.parse_when(text)
    except ValueError as exc:
        fail(exc)


def _schema(schema: str | None) -> str:
    return schema or AuditSettings().schema_name


async def _with_pool(work: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
    pool = await create_pool(_settings().database_url, min_size=1, max_size=4)
    try:
        return await work(pool)
    finally:
        await pool.close()


async def _with_bus_and_pool(work: Callable[[Bus, asyncpg.Pool], Awaitable[T]]) -> T:
    settings = _settings()
    if not settings.nats_url:
        raise AgentOSError("no NATS here: start AgentOS with `agentos up` (or set AGENTOS_NATS_URL)")
    bus = await Bus.connect(settings, source="cli-audit")
    try:
        return await _with_pool(lambda pool: work(bus, pool))
    finally:
        await bus.close()


def _check_format(fmt: str, allowed: tuple[str, ...] = render.FORMATS) -> None:
    if fmt not in allowed:
        err.print(f"[bold red]agentos: error:[/] --format must be one of {', '.join(allowed)}")
        raise typer.Exit(2)


def _rows(fetch: Callable[[asyncpg.Pool], Awaitable[list[dict[str, Any]]]], fmt: str, title: str) -> None:
    _check_format(fmt)
    rows = _run(_with_pool(fetch))
    render.emit(console, rows, fmt, title=title)


@app.command()
def query(
    agent: Annotated[str | None, typer.Option(help="Agent name")] = None,
    type: Annotated[str | None, typer.Option(help="Event type: task.completed or the full type")] = None,
    since: Since = None, until: Until = None,
    goal: Annotated[str | None, typer.Option(help="Goal id (goal_id or correlation id)")] = None,
    tool: Annotated[str | None, typer.Option(help="A tool the event names")] = None,
    model: Annotated[str | None, typer.Option(help="A model the event's usage names")] = None,
    tag: Annotated[str | None, typer.Option(help="Classification tag, e.g. personal_data, pii:email")] = None,
    tenant: Tenant = None, limit: Annotated[int, typer.Option(help="Most rows (newest first)")] = 100,
    fmt: Format = "table", schema: Schema = None,
) -> None:
    """Events matching every filter given, newest first."""
    if type is not None and not q.types_named(type):
        fail(f"event type {type!r} is not in the catalogue (e.g. task.completed, or a full type "
             "dev.agentos.task.completed.v1)")
    filters = q.Filters(tenant=tenant, agent=agent, type=type, since=_when(since), until=_when(until),
                        goal=goal, tool=tool, model=model, tag=tag, limit=limit)
    _rows(lambda pool: q.query_events(pool, _schema(schema), filters), fmt, "events")


@app.command("personal-data")
def personal_data(since: Since = "7d", tenant: Tenant = None, fmt: Format = "table", schema: Schema = None) -> None:
    """Which agents touched personal data (events classified personal_data) since --since."""
    when = _when(since)
    _rows(lambda pool: q.personal_data(pool, _schema(schema), when, tenant), fmt,
          f"agents with personal data since {since}")


@app.command()
def denied(since: Since = None, tenant: Tenant = None, fmt: Format = "table", schema: Schema = None) -> None:
    """Policy denials: denied decisions, rejected or expired approvals, tasks failed by a policy (the
    note on stderr says what counts)."""
    err.print(f"[dim]{q.POLICY_NOTE}[/]", soft_wrap=True)
    when = _when(since)
    _rows(lambda pool: q.denied(pool, _schema(schema), when, tenant), fmt, "policy denials")


@app.command()
def cost(goal: str, tenant: Tenant = None, fmt: Format = "table", schema: Schema = None) -> None:
    """A goal's model calls, tokens and spend per agent and model."""
    _rows(lambda pool: q.cost(pool, _schema(schema), goal, tenant), fmt, f"cost of goal {goal}")


@app.command("allowed-by")
def allowed_by(ref: Annotated[str, typer.Argument(help="An event id, or an action, tool, model or resource")],
               since: Since = None, tenant: Tenant = None, fmt: Format = "table", schema: Schema = None) -> None:
    """Which policy decisions and versions let an event or an action through."""
    _check_format(fmt)
    when = _when(since)
    answer = _run(_with_pool(lambda pool: q.allowed_by(pool, _schema(schema), ref, tenant, when)))
    if answer["rows"]:
        render.emit(console, answer["rows"], fmt, title=f"event {ref}")
    render.emit(console, answer["decisions"], fmt, title=f"policy decisions about {ref}")
    if not answer["decisions"]:
        err.print(f"no policy decision about {ref!r} is in this log (none was asked for it, or it happened "
                  "before the policy service ran)", soft_wrap=True)


@app.command()
def trace(goal: str, tenant: Tenant = None, fmt: Format = "table", schema: Schema = None) -> None:
    """A goal's events as a causal tree, and per task: context, charter, models, tokens, cost, trace id."""
    _check_format(fmt)
    rows = _run(_with_pool(lambda pool: q.goal_events(pool, _schema(schema), goal, tenant)))
    if not rows:
        err.print(f"no events of goal {goal!r} in the projection")
        raise typer.Exit(1)
    tasks = render.trace_tasks(rows)
    if fmt == "table":
        console.print(render.trace_tree(goal, build_tree(rows)))
    render.emit(console, tasks, fmt, title="tasks")


@app.command()
def verify(
    public_key: Annotated[Path | None, typer.Option(help="Trusted public key (default: the key file's .pub)")] = None,
    limit: Annotated[int, typer.Option(help="Stop after this many divergences")] = 20,
    max_behind: Annotated[int, typer.Option(help="Fail when the projection ends more than this many messages "
                                                 "before the log's last sequence at the start")] = 0,
    wait: Annotated[float, typer.Option(help="Seconds to let the projection catch up first")] = 10.0,
    schema: Schema = None,
) -> None:
    """Recompute the chain from the log and from Postgres, re-derive every row, check checkpoints;
    fail when the projection is behind the log by more than --max-behind."""
    path = public_key or public_path(AuditSettings().key_path(_settings().state_dir))
    trusted = load_public(path) if path.exists() else None
    if trusted is None:
        err.print(f"[yellow]no public key at {path}: checkpoint signatures are not checked[/]")
    report = _run(_with_bus_and_pool(
        lambda bus, pool: verify_schema(bus, pool, _schema(schema), trusted, limit=limit, max_behind=max_behind,
                                        wait_s=wait)))
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
    report = _run(_with_bus_and_pool(
        lambda bus, pool: rebuild_schema(bus, pool, _schema(schema), target, keep=keep, workers=workers)))
    for line in render.rebuild_lines(report):
        console.print(line, highlight=False, soft_wrap=True)
    if not report.equal:
        raise typer.Exit(1)


@app.command()
def export(
    since: Since = None, until: Until = None, tenant: Tenant = None,
    fmt: Annotated[str, typer.Option("--format", help="jsonl or parquet")] = "jsonl",
    out: Annotated[Path, typer.Option(help="Output file ('-' is stdout, jsonl only)")] = Path("-"),
    schema: Schema = None,
) -> None:
    """Export the events of a time range (with their chain hashes) as JSON Lines or Parquet."""
    _check_format(fmt, ("jsonl", "parquet"))
    if fmt == "parquet" and str(out) == "-":
        err.print("[bold red]agentos: error:[/] parquet needs --out FILE")
        raise typer.Exit(2)
    start, end = _when(since), _when(until)

    async def go(pool: asyncpg.Pool) -> int:
        rows = export_mod.records(pool, _schema(schema), start, end, tenant)
        if fmt == "parquet":
            return await export_mod.write_parquet(out, rows)
        if str(out) == "-":
            return await export_mod.write_jsonl(sys.stdout.buffer, rows)
        with out.open("wb") as f:
            return await export_mod.write_jsonl(f, rows)
    n = _run(_with_pool(go))
    err.print(f"exported {n} events", highlight=False)


@app.command()
def erase(
    subject: Annotated[str, typer.Argument(help="The data subject's id as events name it (e.g. a ticket's "
                                                 "requester_id), or event:<id> for an event without one")],
    tenant: Tenant = None,
    reason: Annotated[str, typer.Option(help="Why: a request reference (no personal details)")] = "",
    by: Annotated[str | None, typer.Option("--as", help="The operator, recorded as user:<name>")] = None,
) -> None:
    """Crypto-shred a data subject: destroy their key, so every personal field sealed with it reads
    [ERASED] everywhere, and record an erasure.recorded event (no personal data in it)."""
    if not subject.strip():
        err.print("[bold red]agentos: error:[/] the data subject id is empty")
        raise typer.Exit(2)

    async def go() -> tuple[ErasureRecorded, str]:
        settings = resolve(KernelSettings())
        if not settings.nats_url:
            raise AgentOSError("no NATS here: start AgentOS with `agentos up` (or set AGENTOS_NATS_URL)")
        where = check_token("tenant", tenant or settings.tenant)
        bus = await Bus.connect(settings, source="cli-audit")
        try:
            done = await bus.shredder.keys.erase(where, subject)
            fact = ErasureRecorded(key=done.key, revision=done.revision, reason=reason)
            event = bus.new(fact, tenant=where, principal=f"user:{by}" if by else None,
                            id=derived_event_id("erasure", where, done.key, str(done.revision)))
            await bus.publish(event)
            return fact, event.id
        finally:
            await bus.close()
    fact, event_id = _run(go())  # a bad tenant (NamingError) or no NATS: one line, exit 2
    what = (f"key {fact.key} (revision {fact.revision}) destroyed" if fact.revision
            else f"no live key {fact.key} (nothing sealed since any earlier erasure)")
    console.print(f"erased: {what}; recorded erasure.recorded {event_id}", highlight=False, soft_wrap=True)


app.command("replay")(replay_cmd.replay)
