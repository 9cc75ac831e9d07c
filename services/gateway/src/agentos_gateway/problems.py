"""RFC 9457 problem details: every 4xx/5xx of the gateway is ``application/problem+json``.

A problem names a stable ``code`` (also the last part of its ``type`` URI), a human ``detail``
that says exactly what is wrong, and, for batches and mappings, per-item ``errors``.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from agentos_kernel.faults import FAULTS
from agentos_kernel.nul import NUL, nul_detail
from starlette.requests import Request
from starlette.responses import Response

log = logging.getLogger("agentos.gateway")
PROBLEM_JSON = "application/problem+json"
TYPE_PREFIX = "urn:agentos:problem:"

_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
_encoder = msgspec.json.Encoder()


class Problem(Exception):
    """An HTTP error answered with a problem document.

    ``dlq`` says whether the rejected request is a malformed payload that must also be kept in
    ``AGENTOS_DLQ`` (auth failures and rate limits are not).
    """

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        dlq: bool = True,
        attribute: str | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.attribute = attribute
        """The CloudEvents attribute (or member) the problem is about, when there is one."""
        self.status = status
        self.code = code
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}
        self.dlq = dlq

    def document(self, instance: str | None = None) -> dict[str, Any]:
        """The problem+json body."""
        doc: dict[str, Any] = {
            "type": TYPE_PREFIX + self.code,
            "title": _TITLES.get(self.status, "Error"),
            "status": self.status,
            "code": self.code,
            "detail": self.detail,
        }
        if instance:
            doc["instance"] = instance
        if self.attribute is not None:
            doc["attribute"] = self.attribute
        if self.errors:
            doc["errors"] = self.errors
        return doc

    def response(self, instance: str | None = None) -> Response:
        """The HTTP response for this problem."""
        return Response(
            _encoder.encode(self.document(instance)),
            status_code=self.status,
            media_type=PROBLEM_JSON,
            headers=self.headers,
        )


def auth_problem(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> Problem:
    """An authentication, authorisation or rate-limit problem (never dead-lettered)."""
    return Problem(status, code, detail, headers=headers, dlq=False)


INTERNAL_ERROR = "answer a request (a bug: 500 internal_error)"
"""Where a bug met by a request is counted (:data:`agentos_kernel.faults.FAULTS`), by either front door."""


def internal_error(method: str, path: str, exc: Exception) -> Response:
    """A bug, not the caller's fault: a problem document (5xx, so senders retry), the traceback
    logged, and the bug counted for the health record (``agentos status`` shows it)."""
    log.error("%s %s failed: %r", method, path, exc, exc_info=exc)
    FAULTS.note(INTERNAL_ERROR, exc)
    return Problem(
        500,
        "internal_error",
        f"the gateway failed on this request ({type(exc).__name__}); it is logged, retry later",
        dlq=False,
    ).response(path)


def bus_unavailable(exc: BaseException) -> Problem:
    """503 when the event log did not acknowledge a publish (the client should retry)."""
    return Problem(
        503,
        "bus_unavailable",
        f"the event log did not acknowledge: {exc!r}; retry",
        headers={"Retry-After": "1"},
        dlq=False,
    )


def nul_character(where: str, *, dlq: bool = False) -> Problem:
    """400 for text holding a NUL (U+0000): no store of AgentOS (Postgres above all) can keep it."""
    return Problem(400, "nul_character", nul_detail(where), dlq=dlq)


def refuse_nul_parameters(request: Request) -> None:
    """400 naming the query or path parameter that holds a NUL (every route depends on this)."""
    for name, value in request.query_params.multi_items():
        if NUL in name or NUL in value:
            raise nul_character(f"query parameter {name!r}")
    for name, value in request.path_params.items():
        if isinstance(value, str) and NUL in value:
            raise nul_character(f"path parameter {name!r}")


def unknown_source(source: str, *, dlq: bool = True) -> Problem:
    """422 for a webhook source this gateway does not have. The configured sources are not
    named: the caller is not authenticated yet (an operator lists them with ``GET /mappings``)."""
    return Problem(422, "unknown_source", f"no webhook source {source!r} is configured on this gateway", dlq=dlq)
