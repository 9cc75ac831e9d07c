"""The bus: one NATS connection per process, the streams, typed publishing with dedup and claim checks.

Every service talks to every other only through :class:`Bus`. It speaks structured-mode
CloudEvents (``agentos_schemas.codec``), publishes with the event id as ``Nats-Msg-Id`` so a
retried publish is stored once, and moves payloads above ``claim_check_bytes`` to the
JetStream object store, leaving a content hash and a reference in the event.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import nats.errors
import nats.js.errors
from agentos_schemas import Event, codec, event_subject
from agentos_schemas import subjects as s
from agentos_schemas.envelope import WireEvent
from agentos_schemas.subjects import is_foreign
from nats.aio.client import Client as NATS
from nats.js import api
from nats.js.client import JetStreamContext
from pydantic import BaseModel

from agentos_kernel import guard, shred, tracing
from agentos_kernel.exceptions import BusUnavailable, ConfigError
from agentos_kernel.faults import FAULTS, contained
from agentos_kernel.nats_connection import PermissionDenied, connect_nats
from agentos_kernel.nul import parse_request
from agentos_kernel.redact import redact_payload
from agentos_kernel.replies import PubAck, Replies, pub_ack
from agentos_kernel.retry import Backoff
from agentos_kernel.settings import KernelSettings

if TYPE_CHECKING:
    from agentos_schemas.events import EventData

log = logging.getLogger("agentos.bus")
#: Pauses between tries of a publish NATS did not acknowledge (same id each time), until publish_timeout_s.
PUBLISH_RETRY = Backoff(first_s=0.05, cap_s=1.0)
M = TypeVar("M", bound=BaseModel)

OBJECT_REF_PREFIX = f"nats-object://{s.PAYLOADS_BUCKET}/"
_TRANSIENT = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionReconnectingError,
    nats.js.errors.ServiceUnavailableError,
    asyncio.TimeoutError,
)


class Bus:
    """A process's connection to the AgentOS event log."""

    def __init__(self, nc: NATS, settings: KernelSettings, source: str, denied: dict[str, float] | None = None) -> None:
        self.nc = nc
        self.denied = denied if denied is not None else {}
        self.js: JetStreamContext = guard.RedactingJetStream(nc, timeout=5.0, publish_async_max_pending=4096)
        self.js.redact_kv = settings.redact_stores
        self.settings = settings
        self.source = source
        self._payloads: Any = None
        self._payload_cache: OrderedDict[str, bytes] = OrderedDict()
        self._shredder: shred.Shredder | None = None
        self.replies = Replies(nc, timeout_s=2.0)
        """Pipelined publishes and KV reads on this connection (:mod:`agentos_kernel.replies`)."""

    @classmethod
    async def connect(cls, settings: KernelSettings, *, source: str) -> Bus:
        if not settings.nats_url:
            raise ConfigError("AGENTOS_NATS_URL is not set (run `agentos up`, or point it at a server)")
        tracing.setup(source)
        user, password, inbox = settings.nats_credentials()
        denied: dict[str, float] = {}
        nc = await connect_nats(
            settings.nats_url, name=f"agentos-{source}", user=user, password=password, inbox_prefix=inbox, denied=denied
        )
        return cls(nc, settings, source, denied)

    async def close(self) -> None:
        await self.replies.close()
        # Already closed, or reconnecting (then it is not drained: the process is going away).
        with contained("drain the bus's connection on close", nats.errors.Error, OSError, TimeoutError):
            await self.nc.drain()

    # -- provisioning ---------------------------------------------------------------------------
    async def provision(self, update: bool = True) -> None:
        """Create (and with ``update``, bring up to date) the streams, object store and buckets."""
        day, self._update = 24 * 3600, update
        await self._ensure_stream(
            api.StreamConfig(
                name=s.EVENTS_STREAM,
                subjects=list(s.EVENTS_SUBJECTS),
                storage=api.StorageType.FILE,
                retention=api.RetentionPolicy.LIMITS,
                max_age=self.settings.events_max_age_days * day,
                deny_delete=True,
                deny_purge=True,
                allow_rollup_hdrs=False,
                duplicate_window=120,
                max_msg_size=1 << 20,
                num_replicas=self.settings.replicas,
                description="AgentOS immutable event log: audit trail and replay source",
            )
        )
        await self._ensure_stream(
            api.StreamConfig(
                name=s.DLQ_STREAM,
                subjects=list(s.DLQ_SUBJECTS),
                storage=api.StorageType.FILE,
                retention=api.RetentionPolicy.LIMITS,
                max_age=90 * day,
                deny_delete=True,
                num_replicas=self.settings.replicas,
                description="AgentOS dead letters: redacted bytes and headers plus the reason",
            )
        )
        await self._object_store()
        await self._open_buckets()

    async def _open_buckets(self) -> None:
        """Open (creating what is missing) the key-value buckets the kernel keeps shared state in: health,
        the kill switches (control), ownership leases, claimed event ids (when enabled) and records."""
        with contextlib.suppress(nats.js.errors.BadRequestError):
            await self.js.create_key_value(
                api.KeyValueConfig(bucket=s.HEALTH_BUCKET, ttl=30, history=1, replicas=self.settings.replicas)
            )
        from agentos_kernel import control, identity, ownership, records

        await control.open_bucket(self.js, replicas=self.settings.replicas)
        await ownership.open_bucket(self.js, replicas=self.settings.replicas)
        if self.settings.event_ids_ttl_s:
            await identity.open_bucket(self.js, ttl_s=self.settings.event_ids_ttl_s, replicas=self.settings.replicas)
        await records.Records.open(self.js, replicas=self.settings.replicas)

    async def _ensure_stream(self, config: api.StreamConfig) -> None:
        try:
            await self.js.stream_info(config.name or "")
            if getattr(self, "_update", True):
                await self.js.update_stream(config)
        except nats.js.errors.NotFoundError:
            await self.js.add_stream(config)

    async def _object_store(self) -> Any:
        if self._payloads is None:
            try:
                self._payloads = await self.js.object_store(s.PAYLOADS_BUCKET)
            except nats.js.errors.BucketNotFoundError:
                self._payloads = await self.js.create_object_store(
                    s.PAYLOADS_BUCKET,
                    config=api.ObjectStoreConfig(
                        storage=api.StorageType.FILE,
                        replicas=self.settings.replicas,
                        description="AgentOS claim-check payloads, named by sha256",
                    ),
                )
        return self._payloads

    # -- building events ------------------------------------------------------------------------
    def new(
        self,
        data: EventData,
        *,
        tenant: str | None = None,
        subject: str | None = None,
        cause: Event[Any] | None = None,
        correlationid: str | None = None,
        principal: str | None = None,
        id: str | None = None,
    ) -> Event[Any]:
        """A new event from this service. With ``cause``, it inherits the tenant, correlation and
        principal and records the cause as ``causationid``; the active span becomes its parent."""
        traceparent, tracestate = tracing.current_traceparent()
        if traceparent is None and cause is not None:
            traceparent, tracestate = cause.traceparent, cause.tracestate
        if traceparent is None:
            traceparent, tracestate = tracing.root_traceparent(f"create {data.ce_type()}")
        return Event(
            id=id,
            data=data,
            source=self.source,
            type=data.ce_type(),
            dataschema=data.dataschema(),
            tenant=tenant or (cause.tenant if cause else self.settings.tenant),
            subject=subject or (cause.subject if cause else None),
            correlationid=correlationid or (cause.correlationid if cause else None),
            causationid=cause.id if cause else None,
            principal=principal or (cause.principal if cause else f"service:{self.source}"),
            traceparent=traceparent,
            tracestate=tracestate,
        )

    def _prepare_inline(self, event: Event[Any]) -> tuple[str, bytes, dict[str, str]] | tuple[None, bytes, None]:
        """Subject, body and headers of an event whose payload fits inline; for a payload over the
        claim-check threshold, ``(None, payload, None)`` so the caller stores it first."""
        raw = codec.payload_bytes(event)
        if self.settings.redact_events:  # personal data and secrets never enter the log
            raw = redact_payload(raw, event.data_form)
        plan = shred.plan_for(event.type)
        if plan is not None:  # personal fields are sealed with the data subject's key, after redaction
            raw = self.shredder.seal(event, raw, plan)
        if len(raw) > self.settings.claim_check_bytes:
            return None, raw, None
        return event_subject(event.tenant, event.type), codec.encode(event, raw), codec.headers_for(event)

    @property
    def shredder(self) -> shred.Shredder:
        """The crypto-shredding hooks and this process's cache of data-subject keys."""
        if self._shredder is None:
            self._shredder = shred.Shredder(shred.SubjectKeys(self.js, replicas=self.settings.replicas))
        return self._shredder

    async def _prepare(self, event: Event[Any]) -> tuple[str, bytes, dict[str, str]]:
        plan = shred.plan_for(event.type)
        if plan is not None:
            await self.shredder.ready(event, plan)
        subject, body, headers = self._prepare_inline(event)
        if subject is not None and headers is not None:
            return subject, body, headers
        event.datahash = codec.content_hash(body)
        name = event.datahash.removeprefix("sha256:")
        store = await self._object_store()
        try:
            await store.get_info(name)
        except nats.js.errors.ObjectNotFoundError:
            await store.put(name, body)
        return (
            event_subject(event.tenant, event.type),
            codec.encode(event, dataref=OBJECT_REF_PREFIX + name),
            codec.headers_for(event),
        )

    # -- publishing -----------------------------------------------------------------------------
    async def publish(self, event: Event[Any]) -> PubAck:
        """Publish and wait for the stream's ack, retrying through reconnects with the same id."""
        subject, body, headers = await self._prepare(event)
        return await self.publish_raw(subject, body, headers)

    async def publish_raw(self, subject: str, body: bytes, headers: dict[str, str]) -> PubAck:
        """Publish prepared bytes and wait for the ack (2 s per attempt), retrying transient
        failures with backoff and the same ``Nats-Msg-Id`` until ``publish_timeout_s``. A dead
        letter (``dlq.>``) is stored as a redacted copy (:func:`agentos_kernel.guard.dead_letter_copy`)."""
        if subject.startswith(guard.DLQ_PREFIX) and self.settings.redact_stores:
            body, headers = await guard.dead_letter_copy(self.shredder.keys, body, headers, tenant=self.settings.tenant)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.publish_timeout_s
        attempt = 0
        while True:
            delay = PUBLISH_RETRY.delay(attempt)
            try:
                return pub_ack(await (await self.replies.publish(subject, body, headers)))
            except _TRANSIENT as exc:
                if subject.lower() in self.denied:  # nats-py reports the subject lower-cased
                    raise PermissionDenied(f"NATS refused publishing to {subject!r} for this service's user") from None
                if self.nc.is_closed or loop.time() + delay > deadline:
                    raise BusUnavailable(f"publish to {subject!r} not acknowledged: {exc!r}") from None
                await asyncio.sleep(delay)
                attempt += 1

    async def publish_many(self, events: Iterable[Event[Any]], *, timeout: float = 10.0) -> int:
        """Publish with many acks in flight; returns how many.

        Any publish whose ack does not arrive is retried one by one with the same id, so a
        message is never stored twice. Stored in the given order when all go through at once;
        a retried one lands after the others, so publish together only events that do not
        depend on each other's order (publish a cause, await it, then its effects).
        """
        events = list(events)
        await self.shredder.ready_all(events)  # the data subjects' keys, fetched together
        prepared: list[tuple[str, bytes, dict[str, str]]] = []
        for event in events:
            item = self._prepare_inline(event)
            prepared.append(item if item[0] is not None else await self._prepare(event))
        return await self.publish_raw_many(prepared, timeout=timeout)

    async def publish_raw_many(
        self, prepared: Sequence[tuple[str, bytes, dict[str, str]]], *, timeout: float = 10.0
    ) -> int:
        futures: list[asyncio.Future[Any] | None] = []
        for sub, body, hdrs in prepared:
            try:
                futures.append(await self.replies.publish(sub, body, hdrs))
            except (nats.errors.Error, OSError):
                futures.append(None)  # reconnecting: the one-by-one publish below
        waiting = [f for f in futures if f is not None]
        if waiting:
            await asyncio.wait(waiting, timeout=timeout)
        for item, future in zip(prepared, futures, strict=True):
            if future is not None and not future.done():
                future.cancel()
            if future is None or future.cancelled() or future.exception() is not None:
                await self.publish_raw(*item)
                continue
            try:
                pub_ack(future.result())
            except (nats.errors.Error, nats.js.errors.Error):
                await self.publish_raw(*item)  # refused (e.g. no stream yet): as one publish does
        return len(prepared)

    # -- claim checks ---------------------------------------------------------------------------
    async def payload(self, wire: WireEvent) -> bytes:
        """The payload bytes of an event, inline or fetched from the object store by reference."""
        raw = codec.inline_data(wire)
        if raw is not None:
            return raw
        ref = wire.dataref or ""
        if not ref.startswith(OBJECT_REF_PREFIX):
            raise codec.DecodeError("claim_check", f"event has no data and an unknown dataref {ref!r}")
        name = ref.removeprefix(OBJECT_REF_PREFIX)
        cached = self._payload_cache.get(name)
        if cached is not None:
            return cached
        store = await self._object_store()
        asked = time.monotonic()
        try:
            result = await store.get(name)
        except nats.js.errors.ObjectNotFoundError:
            raise codec.DecodeError("claim_check", f"payload {name!r} is not in the object store") from None
        except nats.errors.TimeoutError:
            refused = sorted(subject for subject, at in self.denied.items() if at >= asked)
            if refused:  # no answer because the server refused a request on the way: say which
                raise PermissionDenied(
                    f"reading claim-checked payload {name!r}: NATS refused {', '.join(refused)} for this service's user"
                ) from None
            raise
        raw = bytes(result.data or b"")
        if hashlib.sha256(raw).hexdigest() != name:
            raise codec.DecodeError("claim_check", f"payload {name!r} does not match its hash")
        self._payload_cache[name] = raw
        if len(self._payload_cache) > 64:
            self._payload_cache.popitem(last=False)
        return raw

    async def decode(self, body: bytes, headers: dict[str, str] | None) -> Event[Any]:
        wire = codec.decode_wire(body, headers, max_bytes=self.settings.max_event_bytes)
        if is_foreign(wire.type) and "ce-specversion" not in (headers or {}):
            return codec.foreign_event(wire, body)  # an integrator's own type: attributes and data as sent
        codec.payload_class(wire)
        event = codec.keep_extensions(codec.to_event(wire, await self.payload(wire)), body, headers)
        plan = shred.plan_for(event.type)
        if plan is not None:  # personal fields: decrypted, or "[ERASED]" once the key is destroyed
            event = await self.shredder.open(event, plan)
        return event

    # -- request/reply (questions answered from projections; not stored in the log) --------------
    async def request(self, subject: str, payload: BaseModel, reply_type: type[M], *, timeout: float = 3.0) -> M:
        try:
            msg = await self.nc.request(subject, payload.model_dump_json().encode(), timeout=timeout)
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
            raise BusUnavailable(f"no answer on {subject!r} within {timeout}s: {type(exc).__name__}") from None
        return reply_type.model_validate_json(msg.data)

    async def serve(
        self,
        subject: str,
        request_type: type[M],
        handler: Callable[[M], Awaitable[BaseModel]],
        *,
        queue: str,
        error_reply: Callable[[str], BaseModel],
    ) -> Any:
        """Answer requests on ``subject`` (replicas share ``queue``); a bad request gets an error reply."""

        async def on_msg(msg: Any) -> None:
            try:
                request = parse_request(request_type, msg.data)
            except ValueError as exc:
                await msg.respond(error_reply(f"invalid request: {exc}").model_dump_json().encode())
                return
            try:
                reply = await handler(request)
            except Exception as exc:  # boundary: whatever the handler raises, the requester gets an error reply
                log.exception("%s: handler failed", subject)
                FAULTS.note(f"answer a request on {subject}", exc, level=logging.DEBUG)  # logged above
                reply = error_reply(f"{type(exc).__name__}: {exc}")
            await msg.respond(reply.model_dump_json().encode())

        return await self.nc.subscribe(subject, queue=queue, cb=on_msg)

    # -- consuming ------------------------------------------------------------------------------
    def consumer(
        self,
        durable: str,
        filter_subjects: Sequence[str],
        handler: Callable[[Event[Any]], Awaitable[None]],
        **options: Any,
    ) -> Any:
        """A durable consumer running ``handler`` on every event; see :class:`Consumer`."""
        from agentos_kernel.consumer import Consumer

        return Consumer(self, durable, filter_subjects, handler, **options)
