"""The record of what a task's writes really did (pure; no I/O).

Each call of a tool that writes (an outside action or a memory write) leaves one
:class:`~agentos_schemas.events.Effect`, built here from the policy's decision and the tool's
result — not from anything the model says. The records ride on ``task.completed`` and are what
the orchestrator attests the output's claims against.
"""

from __future__ import annotations

from agentos_schemas.events import Effect
from agentos_schemas.events.tasks import EffectOutcome
from agentos_schemas.rpc import PolicyDecision

WRITES = ("outside_action", "memory_write")
"""Tool actions whose calls are recorded as effects."""


def refused(tool: str, action: str, decision: PolicyDecision) -> Effect:
    """A write the policy did not allow: denied, rejected by an approver, or its approval expired."""
    outcome: EffectOutcome = (
        "rejected" if decision.code == "rejected" else "expired" if decision.code == "expired" else "denied"
    )
    return Effect(
        tool=tool,
        action=action,
        outcome=outcome,
        fact_id=decision.decision_id,
        detail=f"{decision.code}: {'; '.join(decision.reasons)}"[:500],
    )


def ran(tool: str, action: str, result: str, ok: bool, fact_id: str = "") -> Effect:
    """A write that was allowed and run: done (or already done before), or failed."""
    outcome: EffectOutcome = "failed" if not ok else "duplicate" if result.startswith("already ") else "succeeded"
    return Effect(tool=tool, action=action, outcome=outcome, fact_id=fact_id, detail=result[:500])


def not_run(tool: str, action: str, why: str) -> Effect:
    """A write that never reached its tool (not listed for the agent, unreadable arguments)."""
    return Effect(tool=tool, action=action, outcome="failed", detail=why[:500])
