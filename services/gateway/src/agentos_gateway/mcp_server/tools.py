"""AgentOS's MCP server: its tools and resources, one implementation for stdio and ``/mcp``.

Each tool is the gateway route that does the same over HTTP (:mod:`.backend`), so it needs the
role that route needs (:mod:`agentos_gateway.auth`); a key without it gets a tool error naming the
roles that may. Results are the models of :mod:`.models` (``outputSchema`` + ``structuredContent``).
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from agentos_schemas.events import Limits
from agentos_schemas.rpc import ApprovalStatusName
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp.server.mcpserver.tools import Tool
from mcp_types import ToolAnnotations
from pydantic import Field

from agentos_gateway.mcp_server.backend import Backend, call, path
from agentos_gateway.mcp_server.models import (
    TERMINAL,
    ApprovalList,
    ApprovalVote,
    AuditPage,
    GoalReceipt,
    GoalReport,
    GoalStatus,
    GoalTrace,
    HaltList,
    Resumed,
    Switch,
)

NAME = "agentos"
INSTRUCTIONS = (
    "AgentOS runs goals with governed agent fleets. Submit a goal with submit_goal, follow it with "
    "goal_status or wait for its outcome with goal_report. Humans decide pending approvals "
    "(list_approvals, decide_approval), operators halt and resume work (halt, resume), analysts "
    "read the audit log (audit_query, goal_trace). Each tool needs the role its description names."
)
REPORT_URI = "agentos://goals/{goal_id}/report"
TRAIL_URI = "agentos://goals/{goal_id}/audit-trail"
POLL_S = 0.5
MAX_WAIT_S = 600.0
READ = ToolAnnotations(read_only_hint=True, open_world_hint=False)
JSON = "application/json"
Tenant = Annotated[str | None, Field(description="Tenant (default: the key's tenant, else the gateway's)")]
GoalId = Annotated[str, Field(description="The goal's id (submit_goal answers it)")]
Scope = Literal["agent", "workflow", "model", "tenant", "all"]


def build_server(backend: Backend) -> MCPServer[Any]:
    """The MCP server whose every tool and resource reaches AgentOS through ``backend``."""
    tools = AgentOSTools(backend)
    server: MCPServer[Any] = MCPServer(
        NAME, title="AgentOS", instructions=INSTRUCTIONS, log_level="WARNING", tools=tool_list(tools)
    )
    for uri, name, title, read in RESOURCES:
        register = server.resource(uri, name=name, title=title, mime_type=JSON, description=description_of(read))
        register(getattr(tools, read))
    return server


def tool_list(tools: AgentOSTools) -> list[Tool]:
    """The registered form of every tool in :data:`TOOLS` (name, description, schemas, hints)."""
    return [
        Tool.from_function(getattr(tools, name), name=name, description=description_of(name), annotations=hints)
        for name, hints in TOOLS.items()
    ]


def description_of(method: str) -> str:
    """A method's docstring as one line: what a tool's or resource's ``description`` says."""
    return " ".join((getattr(AgentOSTools, method).__doc__ or "").split())


class AgentOSTools:
    """The tools and resources; each method is one gateway route, called as the MCP caller."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    async def submit_goal(
        self,
        ctx: Context[Any, Any],
        text: Annotated[str, Field(min_length=1, max_length=20_000, description="The goal in natural language")],
        workflow: Annotated[str | None, Field(description="A declared workflow instead of the planner")] = None,
        capability: Annotated[str | None, Field(description="The capability the goal needs, e.g. triage")] = None,
        inputs: Annotated[dict[str, Any] | None, Field(description="Inputs handed to the goal")] = None,
        limits: Annotated[Limits | None, Field(description="Exit conditions: steps, retries, deadline, budget")] = None,
        tenant: Tenant = None,
        idempotency_key: Annotated[
            str | None, Field(description="Retry with the same key and no second goal is made")
        ] = None,
    ) -> GoalReceipt:
        """Submit a goal (POST /goals); roles: integrator, operator, admin. A capability or workflow
        no registered agent serves is refused, listing the known ones."""
        body: dict[str, Any] = {"text": text, "workflow": workflow, "capability": capability, "tenant": tenant}
        body["inputs"] = inputs or {}
        if limits is not None:
            body["limits"] = limits.model_dump(mode="json")
        answer = await call(self.backend, ctx, "POST", "/goals", body, idempotency_key=idempotency_key)
        return GoalReceipt.model_validate(answer)

    async def goal_status(self, ctx: Context[Any, Any], goal_id: GoalId, tenant: Tenant = None) -> GoalStatus:
        """A goal's status folded from the log (GET /goals/{id}): submitted, running, held, completed,
        failed or escalated, with its steps, tasks and (once completed) its result; roles: integrator,
        operator, analyst, admin."""
        return GoalStatus.model_validate(
            await call(self.backend, ctx, "GET", path("/goals/{}", goal_id, tenant=tenant))
        )

    async def goal_report(
        self,
        ctx: Context[Any, Any],
        goal_id: GoalId,
        wait_s: Annotated[float, Field(ge=0, le=MAX_WAIT_S, description="Seconds to wait for the outcome")] = 0.0,
        tenant: Tenant = None,
    ) -> GoalReport:
        """A goal's outcome: its result (completed), failure or escalation, cost and tokens; waits up
        to wait_s for it to finish (finished says whether it did), asking GET /goals/{id} again every
        half second. Roles as goal_status."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(max(wait_s, 0.0), MAX_WAIT_S)
        while True:
            status = await self.goal_status(ctx, goal_id, tenant)
            finished = status.status in TERMINAL
            if finished or loop.time() >= deadline:
                return GoalReport(**status.model_dump(), finished=finished)
            await asyncio.sleep(min(POLL_S, max(0.0, deadline - loop.time())))

    async def list_approvals(
        self, ctx: Context[Any, Any], status: ApprovalStatusName = "pending", tenant: Tenant = None
    ) -> ApprovalList:
        """Approvals in a status (default pending) with their risk, votes so far, who may approve and
        deadline (GET /approvals); roles: operator, analyst, admin."""
        route = path("/approvals", status=status, tenant=tenant)
        return ApprovalList.model_validate(await call(self.backend, ctx, "GET", route))

    async def decide_approval(
        self,
        ctx: Context[Any, Any],
        approval_id: Annotated[str, Field(description="The approval's id (list_approvals answers it)")],
        verdict: Literal["approve", "reject"],
        reason: Annotated[str, Field(max_length=2000, description="Why (kept in the log); required to reject")] = "",
        user: Annotated[
            str | None,
            Field(description="The human voting (default: the key's name; only an admin key may name another)"),
        ] = None,
    ) -> ApprovalVote:
        """Approve or reject a pending request (POST /approvals/{id}/approve|reject); role: operator
        or admin, and the policy checks that the human holds an approver role for the risk (high
        risk: two different people)."""
        body: dict[str, Any] = {"reason": reason} | ({"user": user} if user else {})
        route = path("/approvals/{}/" + verdict, approval_id)
        return ApprovalVote.model_validate(await call(self.backend, ctx, "POST", route, body))

    async def list_halts(self, ctx: Context[Any, Any]) -> HaltList:
        """The kill switches that are on (GET /halts); roles: operator, analyst, admin."""
        return HaltList.model_validate(await call(self.backend, ctx, "GET", "/halts"))

    async def halt(
        self,
        ctx: Context[Any, Any],
        scope: Scope,
        target: Annotated[
            str | None, Field(description="The agent, workflow (goal id), model or tenant; none for all")
        ] = None,
        reason: Annotated[
            str, Field(max_length=2000, description="Why (recorded in the audit trail)")
        ] = "operator halt",
    ) -> Switch:
        """Kill switch (POST /halts): pause an agent, a workflow, a model, a tenant or everything;
        role: operator or admin. Recorded as control.halt_requested with the key's principal."""
        body = {"scope": scope, "target": target, "reason": reason}
        return Switch.model_validate(await call(self.backend, ctx, "POST", "/halts", body))

    async def resume(
        self,
        ctx: Context[Any, Any],
        scope: Scope,
        target: Annotated[str | None, Field(description="What halt named; none for all")] = None,
    ) -> Resumed:
        """Lift a kill switch (DELETE /halts/…): paused work carries on; role: operator or admin.
        Recorded as control.resume_requested with the key's principal."""
        if scope == "all":
            route = "/halts/all"
        elif not target:
            raise ToolError(f"resuming scope {scope!r} needs the target it was halted for")
        else:
            route = path("/halts/{}/{}", scope, target)
        return Resumed.model_validate(await call(self.backend, ctx, "DELETE", route))

    async def audit_query(
        self,
        ctx: Context[Any, Any],
        agent: str | None = None,
        type: Annotated[str | None, Field(description="Event type: task.completed or the full type")] = None,
        since: Annotated[str | None, Field(description="From: 7d, 24h, 30m or an ISO date/time")] = None,
        until: Annotated[str | None, Field(description="Before: 7d, 24h, 30m or an ISO date/time")] = None,
        goal: Annotated[str | None, Field(description="Goal id")] = None,
        tool: str | None = None,
        model: str | None = None,
        tag: Annotated[str | None, Field(description="Classification tag, e.g. personal_data")] = None,
        tenant: Tenant = None,
        limit: Annotated[int, Field(ge=1, le=500)] = 100,
        cursor: Annotated[str | None, Field(description="next_cursor of the previous page")] = None,
    ) -> AuditPage:
        """Events of the audit log matching every filter given, newest first, one page at a time
        (GET /audit/query); role: analyst or admin."""
        filters = {"agent": agent, "type": type, "since": since, "until": until, "goal": goal, "tool": tool}
        filters |= {"model": model, "tag": tag, "tenant": tenant, "limit": limit, "cursor": cursor}
        return AuditPage.model_validate(await call(self.backend, ctx, "GET", path("/audit/query", **filters)))

    async def goal_trace(
        self,
        ctx: Context[Any, Any],
        goal_id: GoalId,
        tenant: Tenant = None,
        max_events: Annotated[int, Field(ge=1, le=2000)] = 1000,
    ) -> GoalTrace:
        """A goal's events as a causal tree and, per task, what its agent saw and used: charter,
        memory, models, tokens, cost, outcome (GET /audit/trace/{id}); role: analyst or admin."""
        route = path("/audit/trace/{}", goal_id, tenant=tenant, max_events=max_events)
        return GoalTrace.model_validate(await call(self.backend, ctx, "GET", route))

    async def report_resource(self, goal_id: str, ctx: Context[Any, Any]) -> str:
        """The goal's status and, once it completed, its result (what goal_report answers)."""
        try:
            report = await self.goal_report(ctx, goal_id)
        except ToolError as exc:
            raise ResourceError(str(exc)) from None
        return report.model_dump_json(indent=2)

    async def trail_resource(self, goal_id: str, ctx: Context[Any, Any]) -> str:
        """Every audited event of the goal as a causal tree, with its tasks (role: analyst or admin)."""
        try:
            trace = await self.goal_trace(ctx, goal_id)
        except ToolError as exc:
            raise ResourceError(str(exc)) from None
        return trace.model_dump_json(indent=2)


_WRITE = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=True)
TOOLS: dict[str, ToolAnnotations] = {
    "submit_goal": ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False),
    "goal_status": READ,
    "goal_report": READ,
    "list_approvals": READ,
    "decide_approval": _WRITE,
    "list_halts": READ,
    "halt": _WRITE.model_copy(update={"idempotent_hint": True, "open_world_hint": False}),
    "resume": ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True),
    "audit_query": READ,
    "goal_trace": READ,
}
"""Every tool, by name (the :class:`AgentOSTools` method), with its behaviour hints."""
RESOURCES = (
    (REPORT_URI, "goal-report", "Goal report", "report_resource"),
    (TRAIL_URI, "goal-audit-trail", "Goal audit trail", "trail_resource"),
)
"""Every resource template: URI, name, title, the :class:`AgentOSTools` method that reads it."""


__all__ = [
    "INSTRUCTIONS",
    "NAME",
    "REPORT_URI",
    "RESOURCES",
    "TOOLS",
    "TRAIL_URI",
    "AgentOSTools",
    "build_server",
    "description_of",
    "tool_list",
]
