"""Python SDK: publish events and submit goals through the gateway (HTTP), or straight onto the bus (NATS).

Over HTTP (integrators, anything outside the cluster)::

    async with GatewayClient("http://127.0.0.1:8080", api_key="...") as gw:
        await gw.publish(event)                      # structured CloudEvent; several -> one batch
        receipt = await gw.submit_goal("Summarise this week's refunds")
        status = await gw.goal_status(receipt.goal_id)

Every write carries an ``Idempotency-Key`` (yours, or a fresh one per call) that is reused on
each retry, so a retry after a lost response never publishes twice. 5xx, 429 (honouring
``Retry-After``) and connection errors are retried with exponential backoff; any other error
raises :class:`GatewayError` with the server's problem document.

In the cluster, :class:`BusClient` publishes through the kernel :class:`~agentos_kernel.Bus`
(same events, same dedup by event id, no HTTP hop).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeAlias

import httpx
import msgspec
from agentos_kernel import Bus, KernelSettings
from agentos_kernel.retry import Backoff, retry_after
from agentos_schemas import Event, codec, derived_event_id, new_event_id
from agentos_schemas.events import GoalSubmitted, Limits

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
EventLike: TypeAlias = Event[Any] | dict[str, Any]


class GatewayError(Exception):
    """The gateway refused the request; ``problem`` is its RFC 9457 document."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        super().__init__(f"{status} {problem.get('code', '')}: {problem.get('detail', problem)}")
        self.status = status
        self.problem = problem

    @classmethod
    def from_response(cls, resp: httpx.Response) -> GatewayError:
        """The error for a 4xx/5xx response."""
        try:
            doc = resp.json()
        except ValueError:
            doc = {"detail": resp.text[:500]}
        return cls(resp.status_code, doc if isinstance(doc, dict) else {"detail": doc})


class GatewayUnavailable(GatewayError):
    """The gateway could not be reached (or kept failing) within the retries."""


@dataclass(frozen=True)
class Published:
    """What ``publish`` stored: event ids, which of them were already stored (retries), and the
    events of a batch the gateway refused (each ``{index, status, code, detail, attribute?}``)."""

    ids: list[str]
    duplicates: list[str]
    refused: list[dict[str, Any]] = field(default_factory=list[dict[str, Any]])


@dataclass(frozen=True)
class GoalReceipt:
    """An accepted goal."""

    goal_id: str
    location: str
    duplicate: bool
    replayed: bool


def _event_bytes(event: EventLike) -> bytes:
    return codec.encode(event) if isinstance(event, Event) else msgspec.json.encode(event)


class GatewayClient:
    """Async HTTP client of the gateway, with retries and idempotency keys."""

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        *,
        retries: int = 4,
        backoff_s: float = 0.2,
        max_backoff_s: float = 10.0,
        max_retry_after_s: float = 60.0,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.retries = retries
        self.backoff = Backoff(first_s=backoff_s, cap_s=max(backoff_s, max_backoff_s))
        self.max_retry_after_s = max_retry_after_s
        self._http = httpx.AsyncClient(
            base_url=url.rstrip("/"), headers=headers, timeout=timeout_s, transport=transport
        )

    async def __aenter__(self) -> GatewayClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def publish(self, *events: EventLike, idempotency_key: str | None = None, dry_run: bool = False) -> Published:
        """Publish one event (structured mode) or several (one batch, answered per event: the
        refused ones are in ``Published.refused``; a batch of which none is valid raises)."""
        if len(events) == 1:
            body, ctype = _event_bytes(events[0]), STRUCTURED
        else:
            body, ctype = b"[" + b",".join(_event_bytes(e) for e in events) + b"]", BATCH
        path = "/events?dry_run=true" if dry_run else "/events"
        resp = await self.request("POST", path, body, {"content-type": ctype}, idempotency_key=idempotency_key)
        items = resp.json()["events"]
        kept = [i for i in items if "id" in i]
        return Published(
            [i["id"] for i in kept], [i["id"] for i in kept if i.get("duplicate")], [i for i in items if "id" not in i]
        )

    async def submit_goal(
        self,
        text: str,
        *,
        workflow: str | None = None,
        inputs: dict[str, Any] | None = None,
        limits: Limits | None = None,
        tenant: str | None = None,
        idempotency_key: str | None = None,
        capability: str | None = None,
    ) -> GoalReceipt:
        """Submit a goal; the same ``idempotency_key`` never makes a second goal. A ``capability``
        or ``workflow`` the fleet does not know is refused (422, listing the known ones)."""
        doc: dict[str, Any] = {"text": text, "workflow": workflow, "inputs": inputs or {}, "tenant": tenant}
        if capability is not None:
            doc["capability"] = capability
        if limits is not None:
            doc["limits"] = limits.model_dump()
        resp = await self.request(
            "POST",
            "/goals",
            msgspec.json.encode(doc),
            {"content-type": "application/json"},
            idempotency_key=idempotency_key,
        )
        body = resp.json()
        return GoalReceipt(
            body["goal_id"],
            resp.headers.get("location", body["status_url"]),
            body["duplicate"],
            resp.headers.get("idempotency-replayed") == "true",
        )

    async def goal_status(self, goal_id: str) -> dict[str, Any]:
        """The goal's status document (``status``: submitted, running, held, completed, failed,
        escalated)."""
        doc: dict[str, Any] = (await self.request("GET", f"/goals/{goal_id}")).json()
        return doc

    async def ingest(
        self, source: str, payload: dict[str, Any] | bytes, *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """Map a vendor payload with the gateway's ``source`` mapping and publish the result."""
        body = payload if isinstance(payload, bytes) else msgspec.json.encode(payload)
        resp = await self.request(
            "POST",
            f"/ingest/{source}",
            body,
            {"content-type": "application/json"},
            idempotency_key=idempotency_key,
        )
        doc: dict[str, Any] = resp.json()
        return doc

    async def match(self, payload: dict[str, Any] | bytes) -> dict[str, Any]:
        """Which of the gateway's mappings a payload matches (``matches``) and why the others do
        not (``unmatched``); nothing is published."""
        body = payload if isinstance(payload, bytes) else msgspec.json.encode(payload)
        resp = await self.request("POST", "/mappings/match", body, {"content-type": "application/json"})
        doc: dict[str, Any] = resp.json()
        return doc

    async def preview(self, source: str, payload: dict[str, Any] | bytes) -> dict[str, Any]:
        """The events a vendor payload maps to; nothing is published."""
        body = payload if isinstance(payload, bytes) else msgspec.json.encode(payload)
        doc: dict[str, Any] = (
            await self.request("POST", f"/mappings/{source}/preview", body, {"content-type": "application/json"})
        ).json()
        return doc

    async def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> httpx.Response:
        """Send with retries; writes carry one idempotency key across all attempts."""
        headers = dict(headers or {})
        if method != "GET":
            headers["Idempotency-Key"] = idempotency_key or str(uuid.uuid4())
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                resp = await self._http.request(method, path, content=body, headers=headers)
            except httpx.TransportError as exc:
                if last:
                    raise GatewayUnavailable(0, {"detail": f"cannot reach the gateway: {exc!r}"}) from None
                await asyncio.sleep(self._delay(attempt, None))
                continue
            if (resp.status_code >= 500 or resp.status_code == 429) and not last:
                await asyncio.sleep(self._delay(attempt, resp.headers.get("retry-after")))
                continue
            if resp.is_error:
                raise GatewayError.from_response(resp)
            return resp
        raise AssertionError("unreachable")

    def _delay(self, attempt: int, asked: str | None) -> float:
        """The gateway's ``Retry-After`` (seconds or an HTTP date, at most ``max_retry_after_s``),
        else the jittered, capped backoff."""
        wait = retry_after(asked)
        return min(wait, self.max_retry_after_s) if wait is not None else self.backoff.delay(attempt)


class BusClient:
    """The same writes straight onto the event log, for code running inside the cluster."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    @classmethod
    async def connect(cls, settings: KernelSettings | None = None, *, source: str = "sdk") -> BusClient:
        """Connect to NATS (``AGENTOS_NATS_URL``); streams must exist (``agentos up`` provisions them)."""
        return cls(await Bus.connect(settings or KernelSettings(), source=source))

    async def close(self) -> None:
        """Drain and close the connection."""
        await self.bus.close()

    async def publish(self, *events: Event[Any]) -> int:
        """Publish with the event ids as dedup keys; returns how many."""
        return await self.bus.publish_many(events)

    async def submit_goal(
        self,
        text: str,
        *,
        workflow: str | None = None,
        inputs: dict[str, Any] | None = None,
        limits: Limits | None = None,
        tenant: str | None = None,
        idempotency_key: str | None = None,
    ) -> str:
        """Publish ``goal.submitted``; returns the goal id (derived from ``idempotency_key`` if given)."""
        goal_id = (
            derived_event_id("goal", f"service:{self.bus.source}", idempotency_key)
            if idempotency_key
            else new_event_id()
        )
        data = GoalSubmitted(
            goal_id=goal_id, text=text, workflow=workflow, inputs=inputs or {}, limits=limits or Limits()
        )
        await self.bus.publish(
            self.bus.new(data, tenant=tenant, subject=f"goal/{goal_id}", correlationid=goal_id, id=goal_id)
        )
        return goal_id


__all__ = ["BusClient", "GatewayClient", "GatewayError", "GatewayUnavailable", "GoalReceipt", "Published"]
