"""Printing audit answers: rich tables and trees for people, JSON and CSV for programs."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.tree import Tree

from agentos_audit.rebuild import RebuildReport
from agentos_audit.trace import Node, short, task_summaries
from agentos_audit.verify import Report

FORMATS = ("table", "json", "csv")


def plain(value: Any) -> Any:
    """A JSON/CSV-friendly value (times in ISO 8601 UTC, bytes in hex)."""
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, float):
        return round(value, 9)
    return value


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    if isinstance(value, str) and value.startswith("dev.agentos."):
        return short(value)
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    return str(plain(value))


def to_json(rows: Sequence[dict[str, Any]]) -> str:
    """Rows as a JSON array."""
    return json.dumps([{k: plain(v) for k, v in r.items()} for r in rows], indent=2, default=str)


def to_csv(rows: Sequence[dict[str, Any]]) -> str:
    """Rows as CSV with a header line (lists joined with \", \")."""
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: _cell(v) if isinstance(v, list | tuple) else plain(v) for k, v in r.items()})
    return out.getvalue()


def emit(console: Console, rows: Sequence[dict[str, Any]], fmt: str, *, title: str | None = None) -> None:
    """Print ``rows`` as a table, JSON or CSV."""
    if fmt == "json":
        console.print_json(to_json(rows)) if console.is_terminal else console.out(to_json(rows), highlight=False)
    elif fmt == "csv":
        console.out(to_csv(rows), end="", highlight=False)
    else:
        table = Table(title=title, show_lines=False)
        for column in rows[0] if rows else ["(no rows)"]:
            table.add_column(column, overflow="fold")
        for r in rows:
            table.add_row(*(_cell(v) for v in r.values()))
        console.print(table)


def _add(tree: Tree, node: Node, trace_id: str | None) -> None:
    own = node.row.get("trace_id")
    text = node.label + (f"  [dim]trace {own}[/]" if own and own != trace_id else "")
    branch = tree.add(text)
    for line in node.details:
        branch.add(f"[dim]{line}[/]")
    for child in node.children:
        _add(branch, child, own or trace_id)


def trace_tree(goal: str, roots: list[Node]) -> Tree:
    """The causal tree of one goal."""
    tree = Tree(f"[bold]goal {goal}[/]")
    for root in roots:
        _add(tree, root, None)
    return tree


def trace_tasks(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The per-task summary rows, ready for :func:`emit`."""
    out = []
    for t in task_summaries(rows):
        out.append({**t, "memory_ids": len(t["memory_ids"]), "cost_usd": round(t["cost_usd"], 9)})
    return out


def verify_lines(report: Report) -> list[str]:
    """A human summary of a verification."""
    lines = [
        f"schema {report.schema}: chain head seq {report.head_seq}, {report.chain_rows} chain rows, "
        f"{report.events_checked} events re-derived from the log, "
        f"{report.checkpoints_valid}/{report.checkpoints} checkpoints valid"
    ]
    lines.append(
        f"verified up to stream seq {report.head_seq}; the log's last seq was {report.log_last_seq} when verify started"
    )
    if report.log_ahead:
        lines.append(f"the log holds {report.log_ahead} newer messages not projected yet (not checked)")
    first = report.first
    if first is None:
        lines.append("OK: the log, the chain, the projection and the checkpoints agree")
        return lines
    lines.append(
        f"DIVERGENCE ({len(report.divergences)} found): first is {first.kind} at seq {first.seq} "
        f"in {first.where}: {first.detail}"
    )
    lines += [f"  {d.kind} seq {d.seq} ({d.where}): {d.detail}" for d in report.divergences[1:10]]
    return lines


def rebuild_lines(r: RebuildReport) -> list[str]:
    """A human summary of a rebuild."""
    verdict = "EQUAL" if r.equal else f"DIFFERENT (first difference at seq {r.first_difference})"
    kept = f"kept as {r.target}" if r.kept else "dropped"
    return [
        f"rebuilt {r.live} up to seq {r.up_to} into {r.target} in {r.seconds:.1f}s ({kept})",
        f"{r.chain_rows} chain rows, {r.event_rows} events; live digest {r.live_digest[:16]}…, "
        f"rebuilt digest {r.rebuilt_digest[:16]}…: {verdict}",
    ]


__all__ = [
    "FORMATS",
    "emit",
    "plain",
    "rebuild_lines",
    "to_csv",
    "to_json",
    "trace_tasks",
    "trace_tree",
    "verify_lines",
]
