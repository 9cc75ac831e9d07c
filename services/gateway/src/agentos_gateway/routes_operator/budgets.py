"""Spend against caps, through the policy service's ``agentosrpc.policy.budget``."""

from __future__ import annotations

from agentos_schemas import rpc as r
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response

from agentos_gateway.auth import Principal
from agentos_gateway.gateway import Gateway, json_response
from agentos_gateway.routes_operator.common import (
    POLICY_TIMEOUT_S,
    Problems,
    ask,
    read,
    service_failed,
    tenant_of,
)


def add_budget_routes(app: FastAPI, gw: Gateway, problems: Problems) -> None:
    """``GET /budgets``."""

    @app.get(
        "/budgets",
        responses=problems,
        tags=["operator"],
        summary="Spend against caps (per agent, team and tenant; today and this month)",
    )
    async def get_budgets(request: Request, tenant: str | None = None) -> Response:
        """What `agentos budget` shows: per cap, spent and reserved USD and tokens against the cap."""

        async def work(who: Principal) -> Response:
            query = r.BudgetQuery(tenant=tenant_of(who, tenant))
            reply = await ask(gw, r.POLICY_BUDGET, query, r.BudgetReport, "policy", POLICY_TIMEOUT_S)
            if reply.error:
                raise service_failed(reply.error)
            return json_response(reply.model_dump(mode="json", exclude={"error"}))

        return await read(gw, request, "budgets.read", work)
