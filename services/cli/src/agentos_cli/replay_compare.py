"""What a goal came to, normalised, and how two outcomes differ (``agentos audit replay``)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from agentos_schemas import Event
from agentos_schemas.events import GoalCompleted, GoalFailed, GoalPlanned, TaskCompleted, TaskReviewed
from agentos_schemas.money import usd
from rich.console import Console
from rich.table import Table

from agentos_cli import output

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)


@dataclass
class GoalSummary:
    """What a goal came to, normalised for comparison."""

    goal_id: str
    tenant: str
    status: str
    """``completed``, ``failed`` or ``unfinished``."""
    code: str | None = None
    plans: list[list[dict[str, Any]]] = field(default_factory=list)
    """Per plan revision: each step's id, capability, dependencies and review flag."""
    outputs: dict[str, Any] = field(default_factory=dict)
    result: str = ""
    """The final result text (a failed goal's reason)."""
    reviews: list[str] = field(default_factory=list)
    """QA verdicts as ``step: verdict``, sorted."""
    cost_usd: float = 0.0
    tokens: int = 0
    duration_s: float = 0.0
    steps_run: int = 0


def normalise(value: Any, masks: dict[str, str]) -> Any:
    """``value`` with run-specific text masked: the given ids and tenants, then any UUID."""
    if isinstance(value, str):
        for text, mask in masks.items():
            if text:
                value = value.replace(text, mask)
        return _UUID.sub("<id>", value).strip()
    if isinstance(value, list | tuple):
        return [normalise(v, masks) for v in value]
    if isinstance(value, dict):
        return {k: normalise(v, masks) for k, v in sorted(value.items())}
    return value


def summarize(events: list[Event[Any]], goal_id: str, tenant: str) -> GoalSummary:
    masks = {goal_id: "<goal>", tenant: "<tenant>"}
    summary = GoalSummary(goal_id=goal_id, tenant=tenant, status="unfinished")
    outputs: dict[str, Any] = {}
    for e in events:
        d = e.data
        if isinstance(d, GoalPlanned):
            summary.plans.append(
                [
                    {
                        "step_id": s.step_id,
                        "capability": s.capability,
                        "depends_on": sorted(s.depends_on),
                        "review": s.review,
                    }
                    for s in d.steps
                ]
            )
        elif isinstance(d, TaskCompleted) and "/qa" not in d.task_id:
            outputs[d.step_id] = d.output
        elif isinstance(d, TaskReviewed):
            summary.reviews.append(f"{d.step_id}: {d.verdict}")
        elif isinstance(d, GoalCompleted | GoalFailed) and summary.status == "unfinished":
            if isinstance(d, GoalCompleted):
                summary.status, summary.result, outputs = "completed", d.result, dict(d.outputs)
            else:
                summary.status, summary.code, summary.result = "failed", d.code, d.reason
            summary.cost_usd, summary.tokens = d.cost_usd, d.tokens
            summary.duration_s, summary.steps_run = d.duration_s, d.steps_run
    summary.outputs = normalise(outputs, masks)
    summary.result = normalise(summary.result, masks)
    summary.reviews.sort()
    return summary


def _paths(a: Any, b: Any, path: str = "") -> Iterator[str]:
    """Where two JSON values differ, as ``path: a ≠ b`` lines."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            sub = f"{path}.{key}" if path else str(key)
            if key not in a or key not in b:
                yield (
                    f"{sub}: {'missing' if key not in a else _short(a[key])} ≠ "
                    f"{'missing' if key not in b else _short(b[key])}"
                )
            else:
                yield from _paths(a[key], b[key], sub)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            yield from _paths(x, y, f"{path}[{i}]")
    elif a != b:
        yield f"{path or 'value'}: {_short(a)} ≠ {_short(b)}"


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _status(summary: GoalSummary) -> str:
    return summary.status + (f" ({summary.code})" if summary.code else "")


def compare(original: GoalSummary, replay: GoalSummary) -> list[str]:
    """The differences between two outcomes (none: the replay reproduced the original)."""
    out: list[str] = []
    if (original.status, original.code) != (replay.status, replay.code):
        out.append(f"status: {_status(original)} ≠ {_status(replay)}")
    if len(original.plans) != len(replay.plans):
        out.append(f"plan revisions: {len(original.plans)} ≠ {len(replay.plans)}")
    for revision, (a, b) in enumerate(zip(original.plans, replay.plans, strict=False)):
        mine, theirs = {s["step_id"]: s for s in a}, {s["step_id"]: s for s in b}
        if list(mine) != list(theirs):
            out.append(f"plan r{revision} steps: {', '.join(mine) or '-'} ≠ {', '.join(theirs) or '-'}")
        for sid in [s for s in mine if s in theirs]:
            out += [f"plan r{revision} step {sid} {line}" for line in _paths(mine[sid], theirs[sid])]
    for sid in sorted(set(original.outputs) | set(replay.outputs)):
        if sid not in original.outputs or sid not in replay.outputs:
            where = "replay" if sid in replay.outputs else "original"
            out.append(f"output of step {sid}: only in the {where}")
            continue
        lines = list(_paths(original.outputs[sid], replay.outputs[sid]))
        out += [f"output of step {sid}: {line}" for line in lines[:5]]
        if len(lines) > 5:
            out.append(f"output of step {sid}: … and {len(lines) - 5} more differences")
    if original.result != replay.result:
        a, b = original.result.splitlines() or [""], replay.result.splitlines() or [""]
        at = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
        out.append(
            f"result text differs from line {at + 1}: "
            f"{_short(a[at] if at < len(a) else '')} ≠ {_short(b[at] if at < len(b) else '')}"
        )
    if original.reviews != replay.reviews:
        out.append(f"QA verdicts: {'; '.join(original.reviews) or '-'} ≠ {'; '.join(replay.reviews) or '-'}")
    return out


@dataclass
class ReplayReport:
    mode: str
    sandbox_tenant: str
    original: GoalSummary
    replay: GoalSummary
    differences: list[str]
    recorded_rules: int = 0
    """Rules in the recorded scenario (recorded mode)."""
    recorded_rules_used: int = 0
    """Of those, how many answered at least one request."""
    sandbox_dir: str | None = None
    """The sandbox's state directory, when kept (``--keep``)."""

    @property
    def equal(self) -> bool:
        return not self.differences

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "equal": self.equal}


def render_report(report: ReplayReport, out: Console) -> None:
    a, b = report.original, report.replay
    table = Table(title=f"replay of goal {a.goal_id} ({report.mode} answers) in sandbox tenant {report.sandbox_tenant}")
    for column in ("", "original", "replay", "same"):
        table.add_column(column)

    def row(name: str, x: Any, y: Any, same: bool | None) -> None:
        verdict = "[dim]not compared[/]" if same is None else "[green]yes[/]" if same else "[red]no[/]"
        table.add_row(name, str(x), str(y), verdict)

    row("goal", a.goal_id, b.goal_id, None)
    row("status", _status(a), _status(b), (a.status, a.code) == (b.status, b.code))
    row(
        "plan",
        "; ".join(" ".join(s["step_id"] for s in p) for p in a.plans),
        "; ".join(" ".join(s["step_id"] for s in p) for p in b.plans),
        a.plans == b.plans,
    )
    row("step outputs", f"{len(a.outputs)} steps", f"{len(b.outputs)} steps", a.outputs == b.outputs)
    row("result text", f"{len(a.result)} chars", f"{len(b.result)} chars", a.result == b.result)
    row("QA verdicts", len(a.reviews), len(b.reviews), a.reviews == b.reviews)
    row("tokens · cost", f"{a.tokens} · {usd(a.cost_usd)}", f"{b.tokens} · {usd(b.cost_usd)}", None)
    output.show(out, table)
    if report.mode == "recorded":
        out.print(f"recorded answers: {report.recorded_rules_used} of {report.recorded_rules} rules used")
    if report.sandbox_dir:
        out.print(f"sandbox kept in {report.sandbox_dir}")
    if report.equal:
        out.print("[bold green]the replay reproduced the original outcome[/]")
        return
    out.print(f"[bold red]{len(report.differences)} difference(s):[/]")
    for line in report.differences:
        out.print(f"  • {line}", highlight=False, soft_wrap=True)
