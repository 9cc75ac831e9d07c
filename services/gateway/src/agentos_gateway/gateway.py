"""The gateway's state and the request pipeline every write endpoint shares.

Pipeline: authenticate and authorise (401/403/429, from headers only) → read the body within
``max_body_bytes`` (413) → replay an ``Idempotency-Key`` → run the endpoint → keep its response
under the key. A :class:`~agentos_gateway.problems.Problem` becomes a problem+json response,
and a rejected payload is also written to the DLQ with the reason.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import nats.errors
import nats.js.errors
from agentos_kernel import Bus, BusUnavailable, shred
from agentos_kernel.faults import contained
from agentos_kernel.grants import GATEWAY_RESERVED
from agentos_kernel.nul import json_nul_path
from agentos_kernel.replies import pub_ack
from agentos_schemas import Event, codec
from agentos_schemas import subjects as s
from agentos_schemas.events import GoalSubmitted
from agentos_schemas.subjects import NamingError, parse_type
from starlette.requests import Request
from starlette.responses import Response

from agentos_gateway import binding
from agentos_gateway import kv as buckets
from agentos_gateway.auth import ApiKeys, Principal, presented_key
from agentos_gateway.dlq import DeadLetters
from agentos_gateway.idempotency import HEADER as IDEMPOTENCY_HEADER
from agentos_gateway.idempotency import Idempotency, check_key
from agentos_gateway.mapping import SHIPPED_DIR, Mapping, load_mappings, subscribers
from agentos_gateway.problems import Problem, bus_unavailable, nul_character
from agentos_gateway.settings import GatewaySettings
from agentos_gateway.webhooks import ReplayGuard, Verifier

_encoder = msgspec.json.Encoder()
Endpoint = Callable[[bytes, Principal], Awaitable[Response]]


class BodyTooLarge(Problem):
    """413, keeping what was read so the dead letter has it."""

    def __init__(self, limit: int, partial: bytes) -> None:
        super().__init__(413, "body_too_large", f"the request body is over the {limit}-byte limit")
        self.partial = partial


class JSONBytes(Response):
    """A JSON body already encoded, with only content-length and content-type headers (the
    ingest routes' answers): what starlette's Response sends, built with less work."""

    media_type = "application/json"

    def __init__(self, body: bytes, status_code: int = 200) -> None:
        self.status_code = status_code
        self.body = body
        self.background = None
        self.raw_headers = [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": self.body})


def json_response(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON response encoded with msgspec."""
    if not headers:
        return JSONBytes(_encoder.encode(doc), status)
    return Response(_encoder.encode(doc), status_code=status, media_type="application/json", headers=headers)


_RESERVED = frozenset(".".join(pattern.split(".")[2:]) for pattern in GATEWAY_RESERVED)


def reserved(type_: str) -> bool:
    """Whether events of this type may not be published by the gateway (see the kernel's NATS permissions)."""
    try:
        domain, name, _ = parse_type(type_)
    except NamingError:
        return False
    return f"{domain}.{name}" in _RESERVED


def structured(event: Event[Any]) -> dict[str, Any]:
    """An event as its structured-mode JSON document."""
    doc: dict[str, Any] = msgspec.json.decode(codec.encode(event))
    return doc


def _refuse_nul(index: int, event: Event[Any], encoded: bytes, prefix: str = "") -> None:
    """400 (before anything of the batch is published) for an event whose text holds a NUL."""
    if (where := json_nul_path(encoded)) is not None:
        raise nul_character(f"event {index} ({event.type}) field {prefix + where!r}", dlq=True)


class Gateway:
    """Everything the HTTP handlers need: the bus, keys, mappings, webhook checks, KV stores."""

    def __init__(self, bus: Bus, settings: GatewaySettings) -> None:
        self.bus = bus
        self.settings = settings
        self.keys = ApiKeys(settings)
        self.dlq = DeadLetters(bus)
        self.mappings: dict[str, Mapping] = load_mappings([SHIPPED_DIR, settings.mappings_dir])
        self.subscribed = subscribers(self.mappings)
        """The mapping each foreign CloudEvents type triggers (``agentos_gateway.triggers``)."""
        self.verifiers = {
            name: Verifier(name, cfg, settings.webhook_tolerance_s) for name, cfg in settings.webhooks.items()
        }
        self.idempotency: Idempotency | None = None
        self.replays: ReplayGuard | None = None
        self.goals_kv: Any = None
        self.accepted = 0
        self.rejected = 0
        self._ready_at = 0.0

    async def start(self) -> Gateway:
        """Open (or create) the KV buckets."""
        ttl = self.settings
        self.idempotency = Idempotency(await buckets.bucket(self.bus, buckets.IDEMPOTENCY, ttl=ttl.idempotency_ttl_s))
        self.replays = ReplayGuard(
            await buckets.bucket(self.bus, buckets.WEBHOOKS, ttl=ttl.webhook_dedup_ttl_s),
            self.bus.replies,
            ttl_s=ttl.webhook_dedup_ttl_s,
        )
        self.goals_kv = await buckets.bucket(self.bus, buckets.GOALS, ttl=90 * 24 * 3600)
        return self

    async def drain(self, timeout: float = 10.0) -> None:
        """Finish background work (webhook replay records) before the bus closes."""
        if self.replays is not None:
            await self.replays.drain(timeout)

    @property
    def tenant(self) -> str:
        """The default tenant."""
        return self.bus.settings.tenant

    def rules(self, tenant: str) -> binding.Rules:
        """What a CloudEvents request of this (default) tenant may carry."""
        return binding.Rules(self.bus.settings.max_event_bytes, tenant, frozenset(self.settings.refuse_foreign_types))

    # -- the shared pipeline -------------------------------------------------------------------
    def principal(self, request: Request, action: str) -> Principal:
        """Authenticate the caller and check its role and rate for ``action``."""
        headers = request.headers
        key = presented_key(headers.get("authorization"), headers.get("x-api-key"))
        who = self.keys.identify(key, request.client.host if request.client else None)
        self.keys.authorize(who, action)
        return who

    async def read_body(self, request: Request) -> bytes:
        """The body, or 413 once it passes ``max_body_bytes``."""
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise BodyTooLarge(limit, b"")
        chunks: list[bytes] = []
        size = 0
        receive = request.receive  # ASGI messages straight (no async generator per request)
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":  # nobody is left to answer; nothing was accepted
                raise Problem(400, "client_disconnected", "the client went away mid-request", dlq=False)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(limit, b"".join(chunks))
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        request._body = body  # what Request.body() answers, should anything ask again
        return body

    async def handle(self, request: Request, action: str, endpoint: Endpoint, *, idempotent: bool = True) -> Response:
        """Run a write endpoint through the pipeline described in the module docs."""
        body = b""
        try:
            who = self.principal(request, action)
            body = await self.read_body(request)
            key = request.headers.get(IDEMPOTENCY_HEADER) if idempotent else None
            scope = f"{who.name}:{request.method}:{request.url.path}"
            if key is not None and self.idempotency is not None:
                replayed = await self.idempotency.replay(scope, check_key(key), body)
                if replayed is not None:
                    return replayed
            response = await self._run(endpoint, request, body, who)
            if key is not None and self.idempotency is not None:
                await self.idempotency.keep(scope, key, body, response)
            return response
        except Problem as problem:
            return await self.reject(request, body, problem)

    async def _run(self, endpoint: Endpoint, request: Request, body: bytes, who: Principal) -> Response:
        try:
            return await endpoint(body, who)
        except Problem as problem:
            return await self.reject(request, body, problem)

    async def reject(self, request: Request, body: bytes, problem: Problem, *, authenticated: bool = True) -> Response:
        """The problem response; a rejected payload is also dead-lettered."""
        if isinstance(problem, BodyTooLarge):
            body = problem.partial
        if problem.dlq:
            await self.dead_letter(request, body, problem, authenticated=authenticated)
        else:
            self.rejected += 1
        return problem.response(instance=request.url.path)

    async def dead_letter(self, request: Request, body: bytes, problem: Problem, *, authenticated: bool = True) -> None:
        """Keep a refused payload (a whole request, or one event of a batch) in ``AGENTOS_DLQ``."""
        self.rejected += 1
        await self.dlq.record(
            body,
            dict(request.headers),
            route=f"{request.method} {request.url.path}",
            status=problem.status,
            code=problem.code,
            reason=problem.detail,
            authenticated=authenticated,
        )

    # -- publishing ----------------------------------------------------------------------------
    async def publish(self, events: list[Event[Any]]) -> list[dict[str, Any]]:
        """Publish (the event id is the Nats-Msg-Id) and index submitted goals; 503 if NATS is away,
        403 for facts only the runtime may state (the gateway's NATS user may not publish them).

        Returns only once the stream has acknowledged every event (stored; fsynced when the
        server syncs always). The publishes are pipelined: each goes out on the Bus's
        :class:`~agentos_kernel.replies.Replies` and the request awaits its own ack future, so the
        acks of every request in flight share the connection's writes and reads (group commit)
        instead of one request-reply each.
        An ack that does not come is retried with the kernel's ``publish_raw`` (same id, so a
        publish that did land is not stored twice)."""
        for event in events:
            if reserved(event.type):
                raise Problem(
                    403,
                    "type_reserved",
                    f"{event.type} is a fact only the AgentOS runtime states; it cannot come in through the gateway",
                )
        try:
            acks = await self._publish(events)  # every wait in it has its own deadline: no timer here
        except (TimeoutError, BusUnavailable, nats.errors.Error) as exc:
            raise bus_unavailable(exc) from None
        results = []
        for event, ack in zip(events, acks, strict=True):
            if isinstance(event.data, GoalSubmitted) and not ack.duplicate:
                await self._index_goal(event, ack.seq)
            results.append({"id": event.id, "type": event.type, "duplicate": bool(ack.duplicate)})
        self.accepted += len(events)
        return results

    async def _publish(self, events: list[Event[Any]]) -> list[Any]:
        bus = self.bus
        prepared: list[tuple[str, bytes, dict[str, str]] | None] = []
        futures: list[asyncio.Future[Any] | None] = []
        # The Bus's own encoding, as Bus.publish_many does it: the data subjects' keys ready
        # (crypto-shredding; a batch's keys fetched or created together), then redaction, sealing,
        # subject, Nats-Msg-Id and ce-type headers.
        for index, event in enumerate(events):  # personal fields are checked before they are sealed
            if shred.plan_for(event.type) is not None:
                _refuse_nul(index, event, codec.data_bytes(event.data), "data.")
        await bus.shredder.ready_all(events)
        for index, event in enumerate(events):
            subject, body, headers = bus._prepare_inline(event)
            _refuse_nul(index, event, body if subject is not None else codec.data_bytes(event.data))
            prepared.append(None if subject is None or headers is None else (subject, body, headers))
        for item in prepared:
            if item is None:  # over the claim-check size: the Bus stores it first
                futures.append(None)
                continue
            subject, body, headers = item
            try:  # pipelined: the acks of every request in flight share the connection (replies.py)
                futures.append(await bus.replies.publish(subject, body, headers))
            except (nats.errors.Error, OSError):
                futures.append(None)  # reconnecting: the plain publish below
        acks: list[Any] = []
        for event, item, future in zip(events, prepared, futures, strict=True):
            if future is not None:
                try:  # the ack, or TimeoutError after the Bus's per-attempt wait (2 s)
                    acks.append(pub_ack(await future))
                    continue
                except (TimeoutError, nats.errors.Error, nats.js.errors.Error):
                    pass  # published again below with the same Nats-Msg-Id: stored once
            acks.append(await (bus.publish(event) if item is None else bus.publish_raw(*item)))
        return acks

    async def _index_goal(self, event: Event[GoalSubmitted], seq: int) -> None:
        record = {"tenant": event.tenant, "seq": seq, "time": time.time()}
        # the goal is published; without its index only GET /goals/{id} gets slower (it scans the log)
        with contained("index a published goal for GET /goals/{id}", nats.errors.Error, OSError, ValueError):
            await self.goals_kv.put(buckets.safe_key(event.data.goal_id), _encoder.encode(record))

    async def ready(self) -> tuple[bool, str]:
        """(ready, why): connected to NATS, and the event and DLQ streams exist."""
        if not self.bus.nc.is_connected:
            return False, "not connected to NATS"
        if time.monotonic() - self._ready_at < 1.0:
            return True, "ok"
        try:
            for stream in (s.EVENTS_STREAM, s.DLQ_STREAM):
                await self.bus.js.stream_info(stream)
        except (nats.errors.Error, OSError) as exc:  # a stream missing, NATS not answering: 503 says why
            return False, f"stream check failed: {exc!r}"
        self._ready_at = time.monotonic()
        return True, "ok"
