"""Vendor payloads in: signed webhooks, API-key ingest, and mapping previews (dry runs).

- ``POST /webhooks/{source}``: Standard Webhooks signature (the source's secrets) → replay check
  → mapping → publish → 202; a replayed ``webhook-id`` is ``200 {"duplicate": true}`` and
  publishes nothing. ``?dry_run=true`` verifies and maps without publishing.
- ``POST /ingest/{source}``: the same mapping, authenticated by API key (what ``agentos send``
  uses); the delivery is identified by the payload's own event id, else the ``Idempotency-Key``,
  else the body's SHA-256.
- ``POST /mappings/{source}/preview``: the events a payload maps to, nothing published.
- ``POST /mappings/match``: which mappings (and rules) a payload matches, so a sender may leave
  the source out; nothing published.

A source whose mapping is ``cloudevent`` takes structured or batched CloudEvents as they are
(binary mode too); a plain ``application/json`` body is read as a structured event or a batch.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any

import msgspec
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response

from agentos_gateway import binding, handshake, triggers
from agentos_gateway.auth import Principal, check_tenant
from agentos_gateway.gateway import Gateway, json_response, structured
from agentos_gateway.mapping import CLOUDEVENT, MappingError, matching
from agentos_gateway.problems import Problem, unknown_source

log = logging.getLogger("agentos.gateway.ingress")
VENDOR_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"type": "object", "description": "the vendor's webhook payload, as it sends it"}
            }
        },
    }
}


def _as_cloudevent(body: bytes, headers: Any) -> Any:
    """Webhook senders often cannot set a CloudEvents content type: a plain JSON body without
    ``ce-*`` headers is read as a structured event (an array as a batch)."""
    ctype = binding.media_type(headers.get("content-type"))
    if ctype not in ("", "application/json") or any(k.startswith("ce-") for k in headers):
        return headers
    batch = body.lstrip()[:1] == b"["
    return {**dict(headers), "content-type": binding.BATCH if batch else binding.STRUCTURED}


def map_body(
    gw: Gateway,
    mapping: str,
    body: bytes,
    headers: Any,
    *,
    seed: str,
    tenant: str,
    principal: str,
    list_known: bool = True,
    identity: tuple[str, ...] | None = None,
) -> tuple[str, list[Any]]:
    """(rule, events) for one vendor payload (or CloudEvents, for the ``cloudevent`` mapping).
    With ``list_known`` an unknown mapping's problem lists the known ones (API-key callers only:
    a third party's webhook is not told the gateway's configuration)."""
    if mapping == CLOUDEVENT:
        headers = _as_cloudevent(body, headers)
        incoming = binding.parse(body, headers, gw.rules(tenant))
        if incoming.refused:  # a signed delivery is redelivered whole: all of it, or none
            raise _batch_refused(incoming)
        for event in incoming.events:
            event.principal = principal
        return CLOUDEVENT, incoming.events
    found = gw.mappings.get(mapping)
    if found is None:
        known = f"; known: {', '.join(sorted([*gw.mappings, CLOUDEVENT]))}" if list_known else ""
        raise Problem(422, "unknown_mapping", f"no mapping for source {mapping!r}{known}")
    try:
        payload = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise Problem(400, "invalid_json", f"the {mapping} payload is not valid JSON: {exc}") from None
    try:
        mapped = found.apply(payload, seed=seed, tenant=tenant, principal=principal, identity=identity)
    except MappingError as exc:
        raise Problem(422, exc.code, exc.reason, errors=exc.errors) from None
    if traceparent := headers.get("traceparent"):
        for event in mapped.events:
            event.traceparent = traceparent
    return mapped.rule, mapped.events


def _accepted(rule: str, events: list[Any], results: list[dict[str, Any]], status: int = 202) -> Response:
    goals = [e.data.goal_id for e in events if hasattr(e.data, "goal_id") and e.type.endswith("goal.submitted.v1")]
    return json_response(
        {"accepted": len(results), "rule": rule, "events": results, "goal_id": goals[0] if goals else None},
        status,
    )


def _preview(source: str, rule: str, events: list[Any]) -> Response:
    return json_response(
        {"source": source, "rule": rule, "published": False, "events": [structured(e) for e in events]}
    )


async def webhook(gw: Gateway, source: str, request: Request, dry_run: bool) -> Response:
    """The ``POST /webhooks/{source}`` pipeline (module docs)."""
    body = b""
    try:
        verifier = gw.verifiers.get(source)
        if verifier is None:
            raise unknown_source(source)
        body = await gw.read_body(request)
        webhook_id = verifier.verify(body, request.headers)
    except Problem as problem:
        return await gw.reject(request, body, problem, authenticated=False)
    try:
        return await _delivery(gw, source, webhook_id, body, request, dry_run)
    except Problem as problem:
        problem.dlq = problem.dlq and not dry_run
        return await gw.reject(request, body, problem)


async def _delivery(
    gw: Gateway, source: str, webhook_id: str, body: bytes, request: Request, dry_run: bool
) -> Response:
    assert gw.replays is not None
    config = gw.settings.webhooks[source]
    if not dry_run:
        seen = await gw.replays.seen(source, webhook_id)
        if seen is not None:
            return json_response({"duplicate": True, "webhook_id": webhook_id, **seen}, 200)
    rule, events = map_body(
        gw,
        config.mapping or source,
        body,
        request.headers,
        seed=f"webhook:{webhook_id}",
        tenant=config.tenant or gw.tenant,
        principal=f"webhook:{source}",
        list_known=False,
        identity=("webhook", source, webhook_id),
    )
    if dry_run:
        return _preview(source, rule, events)
    results = await gw.publish(events)
    record = {"rule": rule, "events": [r["id"] for r in results], "at": time.time()}
    gw.replays.remember(source, webhook_id, record)  # stored in the bucket in the background
    if results and all(r["duplicate"] for r in results):
        # Every event was already in the log (another replica is handling, or just handled, this
        # delivery): the same no-op answer as a replay found in the bucket.
        return json_response({"duplicate": True, "webhook_id": webhook_id, **record}, 200)
    return _accepted(rule, events, results)


async def events(gw: Gateway, request: Request, dry_run: bool) -> Response:
    """The ``POST /events`` pipeline: API key, CloudEvents binding, tenant check, publish (202), or
    with ``dry_run`` only validation (200). A batch is answered per event (``binding``)."""

    async def endpoint(body: bytes, who: Principal) -> Response:
        try:
            incoming = binding.parse(body, request.headers, gw.rules(who.tenant or gw.tenant))
        except Problem as problem:
            problem.dlq = problem.dlq and not dry_run
            raise
        for event in incoming.events:
            check_tenant(who, event.tenant)
            event.principal = who.principal
        caused = _triggers(gw, incoming)
        if not incoming.events:
            raise _batch_refused(incoming, dlq=not dry_run)
        if dry_run:
            return json_response({"valid": True, "mode": incoming.mode, **_per_event(incoming, None)})
        results = await gw.publish(incoming.events + [e for _, mapped in caused for e in mapped])
        for _, item, problem in incoming.refused:
            await gw.dead_letter(request, item, problem)
        answer = {"accepted": len(incoming.events), "mode": incoming.mode, **_per_event(incoming, results)}
        if caused:
            answer["triggered"] = [
                {"mapping": source, "cause": e.causationid, "id": e.id, "type": e.type}
                for source, m in caused
                for e in m
            ]
        return json_response(answer, 202)

    return await gw.handle(request, "events.write", endpoint)


def _triggers(gw: Gateway, incoming: binding.Incoming) -> list[tuple[str, list[Any]]]:
    """The events the request's foreign events trigger through the mappings subscribed to their
    types; in a batch, one whose mapping refuses it is refused alone (a single event: the 422)."""
    if not gw.subscribed:
        return []
    if incoming.mode != "batch":
        return triggers.triggered(gw.subscribed, incoming.events)
    caused: list[tuple[str, list[Any]]] = []
    kept: list[tuple[int, Any]] = []
    for index, event in zip(incoming.indexes, incoming.events, strict=True):
        try:
            caused += triggers.triggered(gw.subscribed, [event])
        except Problem as problem:
            incoming.refused.append((index, binding.encode(event), problem))
            continue
        kept.append((index, event))
    incoming.indexes, incoming.events = [i for i, _ in kept], [e for _, e in kept]
    return caused


def _per_event(incoming: binding.Incoming, results: list[dict[str, Any]] | None) -> dict[str, Any]:
    """The answer's ``events`` (in request order: each accepted one's id, or the refused one's
    problem) and ``refused`` count."""
    answers: dict[int, dict[str, Any]] = {}
    for position, (index, event) in enumerate(zip(incoming.indexes, incoming.events, strict=True)):
        answers[index] = {"index": index, **(structured(event) if results is None else results[position])}
    for index, _, problem in incoming.refused:
        answers[index] = _refusal(index, problem)
    return {"refused": len(incoming.refused), "events": [answers[i] for i in sorted(answers)]}


def _refusal(index: int, problem: Problem) -> dict[str, Any]:
    out = {"index": index, "status": problem.status, "code": problem.code, "detail": problem.detail}
    if problem.attribute is not None:
        out["attribute"] = problem.attribute
    return out


def _batch_refused(incoming: binding.Incoming, *, dlq: bool = True) -> Problem:
    bad = len(incoming.refused)
    total = bad + len(incoming.events)
    return Problem(
        422,
        "batch_rejected",
        f"{bad} of {total} events are invalid; none was published",
        errors=[_refusal(index, problem) for index, _, problem in incoming.refused],
        dlq=dlq,
    )


def _map_for_key(gw: Gateway, source: str, body: bytes, request: Request, who: Principal, seed: str) -> Any:
    return map_body(
        gw, source.lower(), body, request.headers, seed=seed, tenant=who.tenant or gw.tenant, principal=who.principal
    )


def _listing(gw: Gateway) -> dict[str, Any]:
    mappings = {
        name: {"description": m.spec.description, "rules": [r.name for r in m.spec.rules]}
        for name, m in sorted(gw.mappings.items())
    }
    mappings[CLOUDEVENT] = {
        "description": "structured or batched CloudEvents, checked against the catalogue",
        "rules": [],
    }
    sources = {name: cfg.mapping or name for name, cfg in sorted(gw.settings.webhooks.items())}
    return {"mappings": mappings, "webhook_sources": sources}


def add_routes(app: FastAPI, gw: Gateway, problems: dict[int | str, dict[str, Any]]) -> None:
    """Add the webhook, ingest and mapping routes to ``app``."""
    _vendor_routes(app, gw, problems)
    _mapping_routes(app, gw, problems)
    _listing_route(app, gw)
    _handshake_routes(app, gw, problems)


def _handshake_routes(app: FastAPI, gw: Gateway, problems: dict[int | str, dict[str, Any]]) -> None:
    responses: dict[int | str, dict[str, Any]] = {
        200: {"description": "Allowed: `WebHook-Allowed-Origin` and `WebHook-Allowed-Rate`"},
        204: {"description": "Not a handshake (no `WebHook-Request-Origin`): `Allow`"},
        **{k: v for k, v in problems.items() if k in (401, 403, 422)},
    }

    @app.options("/webhooks/{source}", responses=responses, summary="CloudEvents webhook handshake")
    async def webhook_handshake(source: str, request: Request) -> Response:
        """CloudEvents abuse protection (HTTP Web Hooks spec §4): `WebHook-Request-Origin` is
        allowed if it is in the source's `origins`. No credentials: the allow-list is the check."""
        return handshake.answer(gw, request.headers, source=source.lower(), client_host=_host(request))

    @app.options("/events", responses=responses, summary="CloudEvents webhook handshake (an API key)")
    async def events_handshake(request: Request) -> Response:
        """CloudEvents abuse protection for `POST /events`: send the API key the deliveries will use;
        the origin is allowed if it is in that key's `origins`."""
        return handshake.answer(gw, request.headers, source=None, client_host=_host(request))


def _host(request: Request) -> str | None:
    return request.client.host if request.client else None


def _vendor_routes(app: FastAPI, gw: Gateway, problems: dict[int | str, dict[str, Any]]) -> None:
    @app.post(
        "/webhooks/{source}",
        status_code=202,
        openapi_extra=VENDOR_BODY,
        responses=problems,
        summary="A signed webhook delivery (Standard Webhooks)",
    )
    async def post_webhook(source: str, request: Request, dry_run: bool = False) -> Response:
        """Verify, de-duplicate by ``webhook-id``, map and publish a third party's delivery."""
        return await webhook(gw, source.lower(), request, dry_run)

    @app.post(
        "/ingest/{source}",
        status_code=202,
        openapi_extra=VENDOR_BODY,
        responses=problems,
        summary="Map and publish a vendor payload (API key)",
    )
    async def post_ingest(source: str, request: Request) -> Response:
        """Map a vendor payload with the source's mapping and publish the events."""

        async def endpoint(body: bytes, who: Principal) -> Response:
            seed = request.headers.get("idempotency-key") or hashlib.sha256(body).hexdigest()
            rule, events = _map_for_key(gw, source, body, request, who, f"ingest:{seed}")
            return _accepted(rule, events, await gw.publish(events))

        return await gw.handle(request, "ingest.write", endpoint)


def _mapping_routes(app: FastAPI, gw: Gateway, problems: dict[int | str, dict[str, Any]]) -> None:
    @app.post(
        "/mappings/{source}/preview",
        openapi_extra=VENDOR_BODY,
        responses=problems,
        summary="The events a payload maps to (nothing is published)",
    )
    async def preview(source: str, request: Request) -> Response:
        """Dry run of a mapping: the mapped events, or the reason the payload cannot be mapped."""

        async def endpoint(body: bytes, who: Principal) -> Response:
            try:
                rule, events = _map_for_key(gw, source, body, request, who, "preview")
            except Problem as problem:
                problem.dlq = False  # a dry run is the caller testing, not an ingestion
                raise
            return _preview(source, rule, events)

        return await gw.handle(request, "mappings.preview", endpoint, idempotent=False)

    @app.post(
        "/mappings/match",
        openapi_extra=VENDOR_BODY,
        responses=problems,
        summary="Which mappings a payload matches (nothing is published)",
    )
    async def match(request: Request) -> Response:
        """The sources whose mapping has a rule matching the payload (``cloudevent`` for a structured
        CloudEvent or a batch), and for every other mapping why it does not match."""

        async def endpoint(body: bytes, who: Principal) -> Response:
            try:
                payload = msgspec.json.decode(body)
            except msgspec.DecodeError as exc:
                raise Problem(400, "invalid_json", f"the payload is not valid JSON: {exc}", dlq=False) from None
            matches, unmatched = matching(gw.mappings, payload)
            return json_response({"matches": matches, "unmatched": unmatched})

        return await gw.handle(request, "mappings.preview", endpoint, idempotent=False)


def _listing_route(app: FastAPI, gw: Gateway) -> None:
    @app.get("/mappings", summary="The mappings this gateway has")
    async def list_mappings(request: Request) -> Response:
        """Every mapping's source, description and rules, and the configured webhook sources."""
        try:
            gw.principal(request, "mappings.read")
        except Problem as problem:
            return await gw.reject(request, b"", problem)
        return json_response(_listing(gw))
