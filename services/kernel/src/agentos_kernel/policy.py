"""Asking the policy service before acting: a client that fails closed.

:class:`PolicyClient` asks ``agentosrpc.policy.decide`` with a bounded timeout. No answer in time,
no responder, or an unreadable answer is a **deny** ("policy service unreachable"); a service
without a valid policy answers deny itself ("no policy loaded"). When the client had to decide
alone it still records the attempt as ``policy.decided`` (best effort), so the log shows it.

A ``require_approval`` answer can be waited out with :meth:`PolicyClient.decide_and_wait`: the
client polls the approval until it is decided (or its own wait ends) and then asks again with the
same ``call_id``, which the service answers from the approval (allow, or deny when rejected or
expired).

An outage is waited out the same way: a deny that says the decision could not be had now (code
``unreachable``: no answer in time; ``unavailable``: the service could not reach a store it
needs, e.g. "policy store (Postgres) unavailable") is retryable by its code (:func:`retryable`),
and :meth:`PolicyClient.decide_and_wait` asks again with backoff (the same ``call_id``, so a
reservation made for a reply that was lost is the one found again) until the dependency is back
or ``unavailable_wait_s`` has passed. Work pauses during an outage instead of failing attempts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import weakref
from typing import Any

import nats.errors
from agentos_schemas import Event, derived_event_id, new_event_id
from agentos_schemas.events import ModelCall, Settlement
from agentos_schemas.events.policy import BudgetSettlementRequested, PolicyDecided
from agentos_schemas.rpc import (
    POLICY_APPROVAL,
    POLICY_DECIDE,
    ApprovalInfo,
    ApprovalQuery,
    ApprovalReply,
    DecisionCode,
    PolicyDecision,
    PolicyRequest,
)
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from agentos_kernel.bus import Bus
from agentos_kernel.exceptions import ConfigError
from agentos_kernel.faults import contained
from agentos_kernel.retry import Backoff

log = logging.getLogger("agentos.policy.client")
_CLIENTS: weakref.WeakKeyDictionary[Bus, PolicyClient] = weakref.WeakKeyDictionary()
UNREACHABLE = "policy service unreachable"
#: Deny codes that say the decision could not be had now, not that the answer is no.
RETRYABLE_CODES = frozenset({"unreachable", "unavailable"})


class PolicyClientSettings(BaseSettings):
    """``AGENTOS_POLICY_*`` settings of callers (the specialist)."""

    model_config = SettingsConfigDict(env_prefix="AGENTOS_POLICY_", extra="ignore", use_attribute_docstrings=True)

    timeout_s: float = Field(default=2.0, gt=0)
    """How long a decision may take before the caller denies on its own."""
    approval_wait_s: float = Field(default=1800.0, gt=0)
    """How long a task waits for a human's approval before it fails."""
    approval_poll_s: float = Field(default=0.5, gt=0)
    unavailable_wait_s: float = Field(default=600.0, ge=0)
    """How long a caller waits out a policy service (or a store it needs) that cannot decide now,
    asking again with backoff, before it gives the attempt up as ``unavailable``."""
    unavailable_backoff_max_s: float = Field(default=5.0, gt=0)
    """The longest pause between two asks while the decision cannot be had."""
    est_output_tokens: int = Field(default=4096, ge=1)
    """``max_tokens`` of a model call that sets none; the reservation counts it in full."""


_ADDRESS = re.compile(r"^[^@\s<>]+@([A-Za-z0-9.-]+)>?$")


def summarize_args(args: dict[str, Any], limit: int = 200) -> dict[str, Any]:
    """Arguments cut short for a request (what the decision and the log keep). An e-mail address
    also gets ``<key>_domain``, which survives the log's redaction of the address itself."""
    out: dict[str, Any] = {}
    domains: dict[str, str] = {}
    for key, value in list(args.items())[:20]:
        if isinstance(value, str):
            out[str(key)] = value[:limit]
            address = _ADDRESS.match(value.strip().lstrip("<"))
            if address:
                domains[f"{key}_domain"] = address.group(1).lower()
        elif isinstance(value, int | float | bool) or value is None:
            out[str(key)] = value
        else:
            out[str(key)] = json.dumps(value, default=str, sort_keys=True)[:limit]
    return {**out, **domains}  # derived last: an argument cannot pose as the derived domain


def estimate_cost(
    messages: list[dict[str, Any]], input_price: float, output_price: float, max_tokens: int
) -> tuple[float, int]:
    """(usd, tokens) a model call may cost at most: prompt tokens × price + max output tokens × price.

    Prompt tokens are estimated as characters / 4 (cheap, and close for English text).
    """
    chars = sum(len(json.dumps(m.get("content") or "", default=str)) for m in messages)
    prompt = math.ceil(chars / 4) + 4 * len(messages)
    return prompt * input_price + max_tokens * output_price, prompt + max_tokens


def model_prices(llm: Any, chain: list[str]) -> tuple[float, float]:
    """(input, output) price per token for a reservation: the dearest model of the fallback chain,
    from the model registry, else litellm's cost map; (0, 0) when nothing is known."""
    registry = getattr(llm, "registry", None)
    best = (0.0, 0.0)
    for alias in chain:
        try:
            spec = registry.get(alias) if registry is not None else None
        except ConfigError:  # not in the registry: priced by litellm's cost map under the alias
            spec = None
        prices = (spec.input_cost_per_token, spec.output_cost_per_token) if spec is not None else (None, None)
        if prices[0] is None:
            prices = _cost_map(spec.model if spec is not None else alias)
        best = (max(best[0], prices[0] or 0.0), max(best[1], prices[1] or 0.0))
    return best


def _cost_map(model: str) -> tuple[float | None, float | None]:
    try:
        import litellm
    except ImportError:  # no litellm here: nothing is known
        return None, None
    entry = litellm.model_cost.get(model) or litellm.model_cost.get(model.split("/", 1)[-1]) or {}
    return entry.get("input_cost_per_token"), entry.get("output_cost_per_token")


def retryable(decision: PolicyDecision) -> bool:
    """Whether a deny only says that no decision could be had now (ask again later)."""
    return decision.decision == "deny" and decision.code in RETRYABLE_CODES


def denial(code: DecisionCode, reason: str) -> PolicyDecision:
    """A deny the caller decides on its own (no policy answer)."""
    return PolicyDecision(
        decision="deny", code=code, reasons=(reason,), decision_id=new_event_id(), policy_version="none"
    )


class PolicyClient:
    """The caller's side of the decision point."""

    def __init__(self, bus: Bus, settings: PolicyClientSettings | None = None) -> None:
        self.bus = bus
        self.settings = settings or PolicyClientSettings()

    @classmethod
    def for_bus(cls, bus: Bus) -> PolicyClient:
        """The client of ``bus`` (made once: its settings are read from the environment once)."""
        client = _CLIENTS.get(bus)
        if client is None:
            client = _CLIENTS[bus] = cls(bus)
        return client

    async def decide(self, request: PolicyRequest, cause: Event[Any] | None = None) -> PolicyDecision:
        """The policy's decision, or a deny when it cannot be had in time (fail closed)."""
        try:
            return await asyncio.wait_for(self._ask(request), self.settings.timeout_s)
        except (TimeoutError, nats.errors.Error, OSError) as exc:
            reason = f"{UNREACHABLE}: no decision within {self.settings.timeout_s:.1f}s ({type(exc).__name__})"
            decision = denial("unreachable", reason)
        except ValidationError as exc:
            decision = denial("error", f"unreadable policy decision: {exc.errors()[0]['msg']}")
        await self._record(request, decision, cause)
        return decision

    async def _ask(self, request: PolicyRequest) -> PolicyDecision:
        body = request.model_dump_json().encode()
        while True:
            try:
                msg = await self.bus.nc.request(POLICY_DECIDE, body, timeout=self.settings.timeout_s)
                return PolicyDecision.model_validate_json(msg.data)
            except nats.errors.NoRespondersError:
                await asyncio.sleep(0.05)  # the service may be restarting: retry until our deadline

    async def _record(self, request: PolicyRequest, decision: PolicyDecision, cause: Event[Any] | None) -> None:
        """Best effort: the attempt the caller denied on its own goes into the log too."""
        fact = PolicyDecided(
            decision_id=decision.decision_id,
            request=request,
            decision=decision.decision,
            code=decision.code,
            reasons=decision.reasons,
            policy_version=decision.policy_version,
        )
        event = self.bus.new(
            fact,
            tenant=request.tenant,
            cause=cause,
            correlationid=request.goal_id or None,
            principal=request.principal,
            id=decision.decision_id,
        )
        # Whatever fails here (the bus is away, as it often is when the caller decides alone), the
        # deny stands: the caller must get its decision, so any error is contained.
        with contained("record a policy decision the caller made alone (best effort: any error, the deny stands)"):
            await asyncio.wait_for(self.bus.publish(event), 2.0)

    async def approval(self, approval_id: str) -> ApprovalInfo | None:
        """The approval's current state (None if it cannot be read now)."""
        try:
            msg = await self.bus.nc.request(
                POLICY_APPROVAL,
                ApprovalQuery(approval_id=approval_id).model_dump_json().encode(),
                timeout=self.settings.timeout_s,
            )
            return ApprovalReply.model_validate_json(msg.data).approval
        except (TimeoutError, nats.errors.Error, ValidationError):
            return None

    async def decide_and_wait(
        self,
        request: PolicyRequest,
        cause: Event[Any] | None = None,
        wait_s: float | None = None,
        unavailable_wait_s: float | None = None,
    ) -> PolicyDecision:
        """Decide, waiting out an outage (see the module docs); on ``require_approval`` wait for the
        humans, then decide again (allow or deny)."""
        outage = unavailable_wait_s if unavailable_wait_s is not None else self.settings.unavailable_wait_s
        decision = await self.decide_when_available(request, cause, outage)
        if decision.decision != "require_approval" or decision.approval_id is None:
            return decision
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (wait_s if wait_s is not None else self.settings.approval_wait_s)
        while loop.time() < deadline:
            info = await self.approval(decision.approval_id)
            if info is not None and info.status != "pending":
                return await self.decide_when_available(request, cause, outage)
            await asyncio.sleep(self.settings.approval_poll_s)
        return denial(
            "expired",
            f"approval {decision.approval_id} not decided within "
            f"{wait_s if wait_s is not None else self.settings.approval_wait_s:.0f}s",
        )

    async def decide_when_available(
        self, request: PolicyRequest, cause: Event[Any] | None, wait_s: float
    ) -> PolicyDecision:
        """:meth:`decide`, asked again with backoff while the answer is only that no decision can be
        had now (:func:`retryable`), for up to ``wait_s``; then the last answer."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        pauses = Backoff(first_s=0.25, cap_s=max(0.25, self.settings.unavailable_backoff_max_s))
        attempt = 0
        while True:
            decision = await self.decide(request, cause)
            left = deadline - loop.time()
            if not retryable(decision) or left <= 0:
                return decision
            pause = min(pauses.delay(attempt), left)
            log.info(
                "policy: no decision for %s %s (%s); asking again in %.1fs",
                request.action,
                request.resource,
                "; ".join(decision.reasons),
                pause,
            )
            await asyncio.sleep(pause)
            attempt += 1

    @staticmethod
    def settlement(decision: PolicyDecision, calls: list[ModelCall]) -> Settlement | None:
        """A model call's real cost against its reservation (None when the decision reserved nothing)."""
        if decision.reservation_id is None:
            return None
        return Settlement(
            reservation_id=decision.reservation_id,
            cost_usd=sum(c.cost_usd for c in calls),
            tokens=sum(c.input_tokens + c.output_tokens for c in calls),
        )

    async def settle(
        self, decision: PolicyDecision, request: PolicyRequest, calls: list[ModelCall], cause: Event[Any] | None = None
    ) -> None:
        """Report a model call's real cost against its reservation (a durable event the service settles).

        A task's last call may instead carry its :meth:`settlement` on ``task.completed``."""
        settlement = self.settlement(decision, calls)
        if settlement is None:
            return
        data = BudgetSettlementRequested(
            reservation_id=settlement.reservation_id,
            cost_usd=settlement.cost_usd,
            tokens=settlement.tokens,
            agent=request.agent,
            goal_id=request.goal_id,
            task_id=request.task_id,
        )
        await self.bus.publish(
            self.bus.new(
                data,
                tenant=request.tenant,
                cause=cause,
                correlationid=request.goal_id or None,
                principal=request.principal,
                id=derived_event_id(settlement.reservation_id, "settle"),
            )
        )
