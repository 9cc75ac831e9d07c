"""Operator and analyst endpoints: what `agentos approvals|approve|reject|takeover|halt|resume|budget`
and `agentos audit query|trace` do, over HTTP.

- Approvals, votes and budgets go through the policy service's request/reply subjects
  (``agentosrpc.policy.approval|approvals|vote|budget``), takeover through ``agentosrpc.policy.decide``
  and then ``task.completed`` with the human as principal — the same subjects the CLI uses, so the
  two-person rule, the policy's human roles and the deadlines apply unchanged
  (:mod:`.approvals`, :mod:`.budgets`, :mod:`.takeover`).
- Kill switches are keys in the ``AGENTOS_CONTROL`` bucket (:mod:`agentos_kernel.control`), written
  first and then recorded as ``control.halt_requested`` / ``control.resume_requested`` (:mod:`.halts`).
- Audit questions go to the audit service (``agentosrpc.audit.query|trace``); the gateway never reads
  the projection itself. Pages are bounded (``limit`` ≤ 500, keyset ``cursor``) (:mod:`.audit`).

**Who is acting.** A vote or takeover names the human (``user``) as the policy knows them. A key
acts as the human of its own name: ``user`` may be left out, and naming someone else is 403
``wrong_user``. Only an ``admin`` key may act for another person (as the CLI's ``--as`` does), so
with per-person operator keys the two-person rule needs two keys.

Every refusal is a problem document; none is dead-lettered (these are not payloads for the log).
"""

from __future__ import annotations

from fastapi import FastAPI

from agentos_gateway.gateway import Gateway
from agentos_gateway.routes_operator.approvals import VoteRequest, add_approval_routes, vote_outcome
from agentos_gateway.routes_operator.audit import add_audit_routes, to_csv
from agentos_gateway.routes_operator.budgets import add_budget_routes
from agentos_gateway.routes_operator.common import Problems, acting_user
from agentos_gateway.routes_operator.halts import HaltRequest, add_halt_routes, list_halts
from agentos_gateway.routes_operator.takeover import TakeoverRequest, add_takeover_route, assigned_task


def add_routes(app: FastAPI, gw: Gateway, problems: Problems) -> None:
    """Add the operator (approvals, takeover, kill switches, budgets) and analyst (audit) routes."""
    add_approval_routes(app, gw, problems)
    add_takeover_route(app, gw, problems)
    add_halt_routes(app, gw, problems)
    add_budget_routes(app, gw, problems)
    add_audit_routes(app, gw, problems)


__all__ = [
    "HaltRequest",
    "TakeoverRequest",
    "VoteRequest",
    "acting_user",
    "add_routes",
    "assigned_task",
    "list_halts",
    "to_csv",
    "vote_outcome",
]
