"""A lean ASGI front for the hot ingest routes; everything else goes to the FastAPI app.

``POST /webhooks/{source}`` and ``POST /events`` without a query string (and the ``OPTIONS``
handshake on both) are answered here, by the very same pipeline functions the FastAPI routes
call (:func:`agentos_gateway.routes_ingress.webhook` and ``.events``): the same checks, problems,
DLQ copies, idempotency and publish-before-202. What is skipped is only framework work per
request: FastAPI's routing, dependency solving and query parsing, and the OTel server span when
no span exporter is configured (the trace context still travels: a W3C ``traceparent`` header is
copied onto mapped events, and CloudEvents carry their own). With ``OTEL_EXPORTER_OTLP_ENDPOINT``
set, each request gets a server span here. The FastAPI routes stay for ``/docs`` and OpenAPI,
and serve ``?dry_run=true`` and every other route.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from agentos_gateway import handshake, routes_ingress
from agentos_gateway.gateway import Gateway
from agentos_gateway.problems import internal_error

WEBHOOKS = "/webhooks/"
_propagator = TraceContextTextMapPropagator()


def exporting() -> bool:
    """Whether spans go anywhere (the kernel's tracing exports only with an OTLP endpoint)."""
    from agentos_kernel import tracing

    return tracing.exporting() or bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


class IngestFastPath:
    """ASGI app: the hot ingest routes here, the rest to ``app`` (see the module docs)."""

    def __init__(self, app: ASGIApp, gw: Gateway) -> None:
        self.app = app
        self.gw = gw
        self.state = getattr(app, "state", None)
        self.trace = exporting()

    def __getattr__(self, name: str) -> Any:  # openapi(), routes … of the wrapped app
        return getattr(self.app, name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("query_string") or "\x00" in scope.get("path", ""):
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        source = None
        if path.startswith(WEBHOOKS):
            source = path[len(WEBHOOKS) :]
            if not source or "/" in source:
                await self.app(scope, receive, send)
                return
            source = source.lower()
        elif path != "/events":
            await self.app(scope, receive, send)
            return
        if method not in ("POST", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        with self._span(request, method, source):
            try:
                if method == "OPTIONS":
                    host = request.client.host if request.client else None
                    response = handshake.answer(self.gw, request.headers, source=source, client_host=host)
                elif source is None:
                    response = await routes_ingress.events(self.gw, request, dry_run=False)
                else:
                    response = await routes_ingress.webhook(self.gw, source, request, dry_run=False)
            except Exception as exc:  # noqa: BLE001  (boundary: a bug answers 500, as the FastAPI app does)
                response = internal_error(method, path, exc)  # logged with its traceback, and counted
        await response(scope, receive, send)

    @contextlib.contextmanager
    def _span(self, request: Request, method: str, source: str | None) -> Iterator[None]:
        if not self.trace:
            yield
            return
        from agentos_kernel import tracing

        route = "/events" if source is None else "/webhooks/{source}"
        parent = _propagator.extract({k: v for k, v in request.headers.items() if k in ("traceparent", "tracestate")})
        token = otel_context.attach(parent)
        try:
            with tracing.tracer().start_as_current_span(
                f"{method} {route}",
                kind=trace.SpanKind.SERVER,
                attributes={"http.request.method": method, "http.route": route, "url.path": request.url.path},
            ):
                yield
        finally:
            otel_context.detach(token)


def with_fast_path(app: Any) -> Any:
    """``app`` behind the ingest fast path, if it is the gateway's app (it has ``state.gateway``)."""
    gw = getattr(getattr(app, "state", None), "gateway", None)
    if isinstance(app, IngestFastPath) or not isinstance(gw, Gateway):
        return app
    return IngestFastPath(app, gw)
