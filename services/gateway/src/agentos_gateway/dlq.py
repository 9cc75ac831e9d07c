"""Rejected requests are kept in ``AGENTOS_DLQ`` (subject ``dlq.agentos.gateway``), never dropped.

A dead letter holds the original body and the request's headers (credentials removed) plus the
reason, under the same header names the kernel's consumers use
(:data:`agentos_kernel.consumer.DLQ_HEADERS`): ``AgentOS-DLQ-Code`` is the problem code,
``AgentOS-DLQ-Reason`` its detail, ``AgentOS-DLQ-Consumer`` is ``gateway``,
``AgentOS-DLQ-Subject`` the route (``POST /events``), ``AgentOS-DLQ-Stream-Seq`` ``0`` (the request
never was in the stream) and ``AgentOS-DLQ-Deliveries`` ``1``. ``AgentOS-DLQ-Status`` carries the
HTTP status and ``AgentOS-DLQ-Truncated`` marks a body cut to :data:`KEEP_BYTES` (oversized ones).

Requests rejected before they were authenticated (bad webhook signatures) are kept too, but at
most :data:`UNAUTHENTICATED_PER_S` a second, so nobody can flood the DLQ without a credential;
beyond that they are counted and logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from agentos_kernel import Bus
from agentos_kernel.consumer import DLQ_HEADERS
from agentos_kernel.faults import FAULTS
from agentos_kernel.guard import header_value
from agentos_schemas import dlq_subject, new_event_id

from agentos_gateway.auth import TokenBucket

log = logging.getLogger("agentos.gateway.dlq")

SUBJECT = dlq_subject("gateway")
KEEP_BYTES = 256 * 1024
UNAUTHENTICATED_PER_S = 20.0
_SECRET_HEADERS = frozenset({"authorization", "x-api-key", "cookie", "proxy-authorization"})
_DROP_HEADERS = frozenset({"content-length", "host", "connection", "transfer-encoding", "nats-msg-id"})
CODE, REASON, CONSUMER, SUBJECT_HDR, SEQ, DELIVERIES = DLQ_HEADERS


def _kept_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {
        k: header_value(v)
        for k, v in headers.items()
        if k.lower() not in _SECRET_HEADERS and k.lower() not in _DROP_HEADERS
    }


def _dead_letter_headers(
    headers: Mapping[str, str], *, route: str, status: int, code: str, reason: str
) -> dict[str, str]:
    """The request's headers worth keeping, and the dead letter's own (module docs)."""
    kept = _kept_headers(headers)
    kept.update(
        {
            "Nats-Msg-Id": f"gateway:{new_event_id()}",
            CODE: code,
            REASON: header_value(reason),
            CONSUMER: "gateway",
            SUBJECT_HDR: route,
            SEQ: "0",
            DELIVERIES: "1",
            "AgentOS-DLQ-Status": str(status),
        }
    )
    return kept


class DeadLetters:
    """Writes rejected requests to the DLQ; counts what it wrote and what it had to skip."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.recorded = 0
        self.skipped = 0
        self._unauthenticated = TokenBucket(UNAUTHENTICATED_PER_S, UNAUTHENTICATED_PER_S * 2)

    async def record(
        self,
        body: bytes,
        headers: Mapping[str, str],
        *,
        route: str,
        status: int,
        code: str,
        reason: str,
        authenticated: bool = True,
    ) -> bool:
        """Keep one rejected request; False if it could not be kept (logged, never raised)."""
        if not authenticated and self._unauthenticated.take() > 0:
            self.skipped += 1
            log.warning(
                "not dead-lettering %s %s (%s): unauthenticated rejections over %.0f/s",
                route,
                status,
                code,
                UNAUTHENTICATED_PER_S,
            )
            return False
        kept = _dead_letter_headers(headers, route=route, status=status, code=code, reason=reason)
        if len(body) > KEEP_BYTES:
            body = body[:KEEP_BYTES]
            kept["AgentOS-DLQ-Truncated"] = "true"
        # Whatever the write raises, the caller still gets its 4xx (never a 5xx for a lost copy);
        # the loss is logged loudly, with the request, and counted for the health record.
        try:
            await asyncio.wait_for(self.bus.publish_raw(SUBJECT, body, kept), timeout=5.0)
        except Exception as exc:  # noqa: BLE001  (boundary: a lost dead letter keeps the 4xx)
            self.skipped += 1
            log.error("could not dead-letter %s %s (%s): %r", route, status, code, exc)
            FAULTS.note("write a rejected request to the DLQ", exc)
            return False
        self.recorded += 1
        return True
