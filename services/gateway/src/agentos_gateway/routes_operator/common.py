"""What every operator and analyst endpoint shares: bodies, the acting human, service requests."""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

import nats.errors
from agentos_kernel import BusUnavailable
from agentos_kernel.nul import json_nul_path
from agentos_schemas import Event
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from agentos_gateway.auth import Principal, check_tenant
from agentos_gateway.binding import is_json, media_type
from agentos_gateway.gateway import Gateway
from agentos_gateway.problems import Problem, bus_unavailable, nul_character

M = TypeVar("M", bound=BaseModel)
Problems = dict[int | str, dict[str, Any]]
POLICY_TIMEOUT_S = 5.0
AUDIT_TIMEOUT_S = 15.0
HUMAN = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,62}$"


def parse_body(model: type[M], body: bytes, content_type: str | None) -> M:
    """``body`` as ``model``: 415 for a non-JSON type, 400 for bad JSON, 422 for invalid fields."""
    ctype = media_type(content_type)
    if ctype and not is_json(ctype):
        raise Problem(415, "unsupported_media_type", f"send JSON (application/json), not {ctype!r}", dlq=False)
    if (where := json_nul_path(body)) is not None:
        raise nul_character(f"body field {where!r}")
    try:
        return model.model_validate_json(body or b"{}")
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            raise Problem(400, "invalid_json", f"body is not valid JSON: {exc.errors()[0]['msg']}", dlq=False) from None
        raise invalid("invalid_body", "the request body is invalid", exc, 422) from None


def invalid(code: str, what: str, exc: ValidationError, status: int = 400) -> Problem:
    """A problem listing each invalid field (the first five in the detail)."""
    errors = [{"field": ".".join(str(p) for p in e["loc"]) or "<root>", "detail": e["msg"]} for e in exc.errors()]
    text = "; ".join(f"{e['field']}: {e['detail']}" for e in errors[:5])
    return Problem(status, code, f"{what}: {text}", errors=errors, dlq=False)


def acting_user(who: Principal, user: str | None) -> str:
    """The human a vote or takeover is by (see the package docs)."""
    if user is None or user == who.name:
        return who.name
    if "admin" in who.roles:
        return user
    raise Problem(
        403, "wrong_user", f"key {who.name!r} acts as {who.name!r}; only an admin key may act for {user!r}", dlq=False
    )


def tenant_of(who: Principal, tenant: str | None) -> str | None:
    """The tenant a read is limited to: the asked one, and a tenant-bound key's own at most."""
    if who.tenant is None:
        return tenant
    check_tenant(who, tenant or who.tenant)
    return who.tenant


async def ask(gw: Gateway, subject: str, payload: BaseModel, reply: type[M], service: str, timeout: float) -> M:
    """A request to a service; 503 when nobody answers, 502 when the answer is unreadable."""
    try:
        return await gw.bus.request(subject, payload, reply, timeout=timeout)
    except (BusUnavailable, nats.errors.Error) as exc:
        raise Problem(
            503,
            f"{service}_unavailable",
            f"the {service} service did not answer on {subject} ({exc}); is it running? retry",
            headers={"Retry-After": "2"},
            dlq=False,
        ) from None
    except ValidationError as exc:
        raise Problem(
            502,
            f"{service}_bad_reply",
            f"the {service} service's answer is not a {reply.__name__}: {exc.errors()[0]['msg']}",
            dlq=False,
        ) from None


def service_failed(error: str) -> Problem:
    """502: the policy service answered with an error."""
    return Problem(502, "policy_error", f"the policy service failed: {error}", dlq=False)


async def read(gw: Gateway, request: Request, action: str, work: Any) -> Response:
    """A read endpoint: authenticate, run ``work(principal)``, turn a problem into its response."""
    try:
        who = gw.principal(request, action)
        return await work(who)
    except Problem as problem:
        problem.dlq = False
        return await gw.reject(request, b"", problem)


async def write(gw: Gateway, request: Request, action: str, work: Any) -> Response:
    """A write endpoint through the gateway's pipeline (body limit, ``Idempotency-Key``) running
    ``work(body, principal)``; its refusals are never dead-lettered."""

    async def endpoint(body: bytes, who: Principal) -> Response:
        try:
            return await work(body, who)
        except Problem as problem:
            problem.dlq = False
            raise

    return await gw.handle(request, action, endpoint)


async def publish(gw: Gateway, event: Event[Any]) -> Any:
    """Publish and wait for the ack; 503 ``bus_unavailable`` if it does not come in time."""
    try:
        return await asyncio.wait_for(gw.bus.publish(event), timeout=gw.bus.settings.publish_timeout_s)
    except (TimeoutError, BusUnavailable, nats.errors.Error) as exc:
        raise bus_unavailable(exc) from None
