"""Standard Webhooks: signature and timestamp checks, and replay protection across restarts and replicas.

Verification uses the ``standardwebhooks`` package on the raw body bytes, once per configured
secret (two during a rotation; either verifies). The timestamp is checked first against the
configured tolerance, so a stale delivery is told so rather than "bad signature".

Replay protection (``webhook-id`` seen before: a 2xx no-op, not a second goal):

1. Look the id up in the ``AGENTOS_GATEWAY_WEBHOOKS`` KV bucket; if it is there, answer
   ``200 {"duplicate": true}``.
2. Otherwise publish the mapped events with ids derived from (source, webhook id), so two
   replicas handling the same delivery at once store each event once (JetStream ``Nats-Msg-Id``
   dedup, 120 s window).
3. Then record the id in the bucket (kept ``webhook_dedup_ttl_s``), so a replay after a
   restart, on another replica, or after the dedup window is still a no-op.

Nothing is lost: if publishing fails no record is written and the sender's retry publishes.
The one gap: a gateway that dies between steps 2 and 3 *and* a retry arriving more than 120 s
later stores the events a second time (same ids, so idempotent consumers are unaffected).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Mapping
from typing import Any

import nats.js.errors
from nats.js.kv import KeyValue
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from agentos_gateway.kv import safe_key
from agentos_gateway.problems import Problem
from agentos_gateway.settings import WebhookSource

HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


class Verifier:
    """Checks one source's deliveries against its one or two secrets."""

    def __init__(self, source: str, config: WebhookSource, tolerance_s: int) -> None:
        self.source = source
        self.tolerance_s = tolerance_s
        self._webhooks = [Webhook(secret) for secret in config.secrets]

    def verify(self, body: bytes, headers: Mapping[str, str], now: float | None = None) -> str:
        """The delivery's ``webhook-id`` if its signature and timestamp are good; 401 otherwise."""
        missing = [h for h in HEADERS if not headers.get(h)]
        if missing:
            raise Problem(
                401, "missing_signature_headers", f"missing Standard Webhooks header(s): {', '.join(missing)}"
            )
        stamp = headers["webhook-timestamp"]
        try:
            sent = float(stamp)
        except ValueError:
            raise Problem(
                401, "bad_timestamp", f"webhook-timestamp {stamp[:40]!r} is not Unix seconds"
            ) from None
        age = (time.time() if now is None else now) - sent
        if abs(age) > self.tolerance_s:
            when = "old" if age > 0 else "in the future"
            raise Problem(
                401,
                "stale_timestamp",
                f"webhook-timestamp is {abs(age):.0f}s {when}; the tolerance"
                f" is {self.tolerance_s}s (a replay, or the sender's clock is wrong)",
            )
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise Problem(400, "invalid_encoding", "webhook body is not valid UTF-8") from None
        plain = {h: headers[h] for h in HEADERS}
        for webhook in self._webhooks:
            try:
                webhook.verify(text, plain, json_parse=False)
                return plain["webhook-id"]
            except (WebhookVerificationError, ValueError):
                continue
        raise Problem(
            401, "bad_signature", f"no webhook-signature matches a secret of source {self.source!r}"
        )


def sign(secret: str, webhook_id: str, body: bytes, timestamp: float | None = None) -> dict[str, str]:
    """Standard Webhooks headers for ``body`` (what a sender does; used by tests and the benchmark)."""
    when = dt.datetime.fromtimestamp(time.time() if timestamp is None else timestamp, dt.UTC)
    signature = Webhook(secret).sign(webhook_id, when, body.decode("utf-8"))
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": signature,
    }


class ReplayGuard:
    """Remembers which webhook ids became events (see the module docs for the protocol)."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    def key(self, source: str, webhook_id: str) -> str:
        """The bucket key of one delivery."""
        return f"{source}.{safe_key(source, webhook_id)}"

    async def seen(self, source: str, webhook_id: str) -> dict[str, Any] | None:
        """What the first delivery of this id produced, or None if it is new."""
        try:
            entry = await self.kv.get(self.key(source, webhook_id))
        except nats.js.errors.KeyNotFoundError:
            return None
        if not entry.value:
            return None
        record: dict[str, Any] = json.loads(entry.value)
        return record

    async def remember(self, source: str, webhook_id: str, record: dict[str, Any]) -> None:
        """Record that this id was turned into events (idempotent)."""
        await self.kv.put(self.key(source, webhook_id), json.dumps(record).encode())
