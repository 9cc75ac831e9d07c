"""The CloudEvents webhook abuse-protection handshake (HTTP 1.1 Web Hooks for Event Delivery, §4).

A sender asks before delivering: ``OPTIONS /webhooks/{source}`` (or ``OPTIONS /events``) with
``WebHook-Request-Origin: <origin name>`` and optionally ``WebHook-Request-Rate`` (requests per
minute) and ``WebHook-Request-Callback``. The gateway answers at once (it never calls the
callback URL):

- allowed: ``200`` with ``WebHook-Allowed-Origin`` (the origin asked for), ``WebHook-Allowed-Rate``
  and ``Allow: OPTIONS, POST``;
- refused: a problem+json (403 ``origin_not_allowed``, 401 for a missing or bad API key on
  ``/events``, 422 for an unknown source) *without* the ``WebHook-Allowed-*`` headers, which is
  what tells a sender no;
- an ``OPTIONS`` without ``WebHook-Request-Origin`` is not a handshake: ``204`` with ``Allow``.

Which origins are allowed is configuration: ``origins`` of the webhook source
(``webhooks.<source>.origins``) for ``/webhooks/{source}``, ``origins`` of the API key presented
(``api_keys[].origins``) for ``/events``; ``*`` in the list allows any origin. Without API keys
(loopback development mode) every origin is allowed on ``/events``.
``WebHook-Allowed-Rate`` is ``*`` for a webhook source (signed deliveries are not rate limited)
and the key's rate limit in requests per minute for ``/events`` (lower if the sender asked for less).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

from starlette.responses import Response

from agentos_gateway.auth import presented_key
from agentos_gateway.problems import Problem, unknown_source

if TYPE_CHECKING:
    from agentos_gateway.gateway import Gateway

ALLOW = "OPTIONS, POST"


def answer(gw: Gateway, headers: Mapping[str, str], *, source: str | None, client_host: str | None) -> Response:
    """The response to an ``OPTIONS`` on ``/webhooks/{source}`` (``source`` given) or ``/events``."""
    path = "/events" if source is None else f"/webhooks/{source}"
    try:
        return _answer(gw, headers, source, client_host)
    except Problem as problem:
        return problem.response(instance=path)


def _answer(gw: Gateway, headers: Mapping[str, str], source: str | None, client_host: str | None) -> Response:
    origin = (headers.get("webhook-request-origin") or "").strip()
    if not origin:
        return Response(status_code=204, headers={"Allow": ALLOW})
    requested = _requested_rate(headers.get("webhook-request-rate"))
    if source is not None:
        config = gw.settings.webhooks.get(source)
        if config is None:
            raise unknown_source(source, dlq=False)
        allowed, where, rate = config.origins, f"webhooks.{source}.origins", "*"
    else:
        who = gw.keys.identify(presented_key(headers.get("authorization"), headers.get("x-api-key")), client_host)
        gw.keys.authorize(who, "events.write")
        spec = next((s for s in gw.keys.specs if s.name == who.name), None)
        allowed = spec.origins if spec is not None else ("*",)  # no keys: loopback development mode
        where = f"the origins of API key {who.name!r}"
        per_s = spec.rate_per_s if spec is not None and spec.rate_per_s else gw.settings.rate_per_s
        limit = max(1, math.floor(per_s * 60))
        rate = str(min(limit, requested) if requested else limit)
    if "*" not in allowed and origin.lower() not in {o.lower() for o in allowed}:
        raise Problem(
            403,
            "origin_not_allowed",
            f"origin {origin!r} may not deliver here: it is not in {where} ({', '.join(allowed) or 'empty'})",
            dlq=False,
        )
    return Response(
        status_code=200,
        headers={"Allow": ALLOW, "WebHook-Allowed-Origin": origin, "WebHook-Allowed-Rate": rate},
    )


def _requested_rate(value: str | None) -> int | None:
    if value is None:
        return None
    if not value.strip().isdigit() or int(value) < 1:
        raise Problem(
            400,
            "bad_request_rate",
            f"WebHook-Request-Rate must be a positive integer (requests per minute), not {value[:40]!r}",
            dlq=False,
        )
    return int(value)
