"""The causal trace of one goal: its events as a tree by ``causationid``, and a summary per task
(what its agent saw — charter, memory, context tokens — which models it used, at what cost, and
the OpenTelemetry trace id). Pure functions over the rows of :func:`queries.goal_events`."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import msgspec
from agentos_schemas.money import usd


@dataclass
class Node:
    """One event in the tree."""

    row: dict[str, Any]
    label: str
    details: list[str]
    children: list[Node] = field(default_factory=list)


def short(type_: str) -> str:
    """``dev.agentos.task.completed.v1`` -> ``task.completed``."""
    parts = type_.split(".")
    return ".".join(parts[2:-1]) if len(parts) >= 5 else type_


def payload(row: dict[str, Any]) -> dict[str, Any]:
    """The row's payload as a dict (``data`` comes back from Postgres as JSON text)."""
    data = row.get("data")
    decoded: dict[str, Any] = msgspec.json.decode(data) if isinstance(data, str | bytes) else (data or {})
    return decoded


def _clip(text: Any, n: int = 90) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= n else flat[: n - 1] + "…"


def _context(d: dict[str, Any]) -> list[str]:
    m = d.get("manifest") or {}
    ids = list(m.get("memory_ids") or [])
    shown = ", ".join(ids[:5]) + (f" … (+{len(ids) - 5})" if len(ids) > 5 else "")
    kinds = m.get("memory_kinds") or {}
    if all(isinstance(v, str) for v in kinds.values()):  # entry id -> kind: count the kinds
        kinds = dict(Counter(kinds.values()))
    by_kind = ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))
    return [
        f"charter {m.get('charter', '?')}; tools {', '.join(m.get('tools') or []) or 'none'}",
        f"memory {len(ids)} entries ({by_kind or 'none'}): {shown or '-'}",
        f"context tokens {m.get('tokens') or {}} of budget {m.get('budget_tokens', 0)}"
        + (f"; trimmed {', '.join(m.get('trimmed') or [])}" if m.get("trimmed") else ""),
    ]


def _usage(row: dict[str, Any]) -> list[str]:
    if not (row.get("tokens") or row.get("cost_usd")):
        return []
    return [f"models {', '.join(row['models'])}; tokens {row['tokens']}; cost {usd(row['cost_usd'])}"]


def _decision(d: dict[str, Any]) -> str:
    request = d.get("request") or {}
    why = f" ({d.get('code')}: {'; '.join(d.get('reasons') or [])})" if d.get("decision") != "allow" else ""
    return (
        f"{d.get('decision')} {request.get('action')} {request.get('resource')} "
        f"by policy {d.get('policy_version')}{why}"
    )


def details(row: dict[str, Any]) -> list[str]:
    """The lines worth showing under one event."""
    name, d = short(row["type"]), payload(row)
    lines = {
        "goal.submitted": lambda: [f"goal: {_clip(d.get('text', ''))}"],
        "goal.planned": lambda: [
            f"plan r{d.get('revision')} by {d.get('planner')}: "
            f"{', '.join(s.get('step_id', '?') for s in d.get('steps') or [])}"
        ],
        "task.assigned": lambda: [f"step {d.get('step_id')} attempt {d.get('attempt')} ({d.get('capability')})"],
        "context.ready": lambda: _context(d),
        "task.failed": lambda: [f"reason: {_clip(d.get('reason', ''))}"],
        "task.reviewed": lambda: [f"{d.get('verdict')} {d.get('step_id')}: {_clip(d.get('feedback', ''), 70)}"],
        "goal.completed": lambda: [
            f"total {usd(d.get('cost_usd', 0))}, {d.get('tokens', 0)} tokens, "
            f"{d.get('steps_run', 0)} steps, {d.get('duration_s', 0):.1f}s"
        ],
        "goal.failed": lambda: [f"{d.get('code')}: {_clip(d.get('reason', ''))}"],
        "policy.decided": lambda: [_decision(d)],
    }.get(name, list)()
    if row.get("tags"):
        lines.append(f"data classification: {', '.join(row['tags'])}")
    return lines + _usage(row)


def label(row: dict[str, Any]) -> str:
    """One line naming an event: time, type, agent, task and sequence."""
    who = f" [{row['agent']}]" if row.get("agent") else ""
    task = f" {row['task_id']}" if row.get("task_id") else ""
    return f"{row['time']:%H:%M:%S.%f}"[:-3] + f" {short(row['type'])}{who}{task} (seq {row['seq']})"


def build_tree(rows: list[dict[str, Any]]) -> list[Node]:
    """Roots of the causal tree; an event whose cause is not in ``rows`` is a root."""
    nodes = {r["id"]: Node(r, label(r), details(r)) for r in rows}
    roots: list[Node] = []
    for r in rows:
        parent = nodes.get(r.get("causationid") or "")
        (parent.children if parent is not None and parent.row is not r else roots).append(nodes[r["id"]])
    return roots


def task_summaries(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per task: agent, charter, memory ids, context tokens, models, tokens, cost, trace id, outcome."""
    tasks: dict[str, dict[str, Any]] = {}
    for r in rows:
        if not r.get("task_id"):
            continue
        t = tasks.setdefault(
            r["task_id"],
            {
                "task_id": r["task_id"],
                "agent": r.get("agent"),
                "charter": None,
                "memory_ids": [],
                "context_tokens": None,
                "models": [],
                "tokens": 0,
                "cost_usd": 0.0,
                "trace_id": r.get("trace_id"),
                "outcome": "open",
            },
        )
        name = short(r["type"])
        if name == "context.ready":
            m = payload(r).get("manifest") or {}
            t["charter"], t["memory_ids"] = m.get("charter"), list(m.get("memory_ids") or [])
            t["context_tokens"] = (m.get("tokens") or {}).get("total")
        if not name.startswith("policy."):  # a decision names the model asked for, not one used
            t["models"] = sorted(set(t["models"]) | set(r.get("models") or []))
        t["tokens"] += int(r.get("tokens") or 0)
        t["cost_usd"] += float(r.get("cost_usd") or 0.0)
        if name in ("task.completed", "task.failed"):
            t["outcome"] = name.split(".")[1]
    return list(tasks.values())


__all__ = ["Node", "build_tree", "details", "label", "payload", "short", "task_summaries"]
