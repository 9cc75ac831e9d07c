"""``Idempotency-Key`` on write endpoints: the same key replays the first response.

The first response to a (caller, route, key) is kept in the ``AGENTOS_GATEWAY_IDEMPOTENCY`` KV
bucket for ``idempotency_ttl_s``; a later request with that key gets it back unchanged, with
``Idempotency-Replayed: true``. Reusing a key for a different body is a 422. Two requests racing
with one key may both run, but every event they publish has an id derived from the key (or
carried by the event), so JetStream stores it once; the first stored response wins.
Server errors (5xx) and 429s are not kept, so a retry after them runs again.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json

import nats.js.errors
from nats.js.kv import KeyValue
from starlette.responses import Response

from agentos_gateway.kv import safe_key
from agentos_gateway.problems import Problem

HEADER = "idempotency-key"
MAX_KEY = 255
_KEEP_HEADERS = ("content-type", "location")


def fingerprint(body: bytes) -> str:
    """What identifies "the same request" under one key."""
    return hashlib.sha256(body).hexdigest()


def check_key(key: str) -> str:
    """400 for an unusable key."""
    if not 1 <= len(key) <= MAX_KEY or not key.isprintable():
        raise Problem(400, "bad_idempotency_key", f"Idempotency-Key must be 1-{MAX_KEY} printable characters")
    return key


class Idempotency:
    """The store of first responses."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    async def replay(self, scope: str, key: str, body: bytes) -> Response | None:
        """The kept response for this key, or None for a first request; 422 if the body differs."""
        try:
            entry = await self.kv.get(safe_key(scope, key))
        except nats.js.errors.KeyNotFoundError:
            return None
        if not entry.value:
            return None
        kept = json.loads(entry.value)
        if kept["fingerprint"] != fingerprint(body):
            raise Problem(
                422,
                "idempotency_key_reused",
                f"Idempotency-Key {key!r} was already used with a different"
                " request body; use a new key for a new request",
                dlq=False,
            )
        headers = dict(kept["headers"]) | {"Idempotency-Replayed": "true"}
        return Response(base64.b64decode(kept["body"]), status_code=kept["status"], headers=headers)

    async def keep(self, scope: str, key: str, body: bytes, response: Response) -> None:
        """Keep ``response`` as the answer to this key (the first kept one wins)."""
        if response.status_code >= 500 or response.status_code == 429:
            return
        record = {
            "fingerprint": fingerprint(body),
            "status": response.status_code,
            "headers": {k: v for k, v in response.headers.items() if k in _KEEP_HEADERS},
            "body": base64.b64encode(bytes(response.body)).decode(),
        }
        with contextlib.suppress(nats.js.errors.KeyWrongLastSequenceError):
            await self.kv.create(safe_key(scope, key), json.dumps(record).encode())
