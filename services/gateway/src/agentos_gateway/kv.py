"""The gateway's JetStream key-value buckets (created on first use, shared by every replica)."""

from __future__ import annotations

import contextlib
import hashlib
import logging

import nats.errors
import nats.js.errors
from agentos_kernel import Bus
from nats.js import api
from nats.js.kv import KeyValue

log = logging.getLogger("agentos.gateway")
WEBHOOKS = "AGENTOS_GATEWAY_WEBHOOKS"
"""Webhook ids already turned into events (replay protection)."""
IDEMPOTENCY = "AGENTOS_GATEWAY_IDEMPOTENCY"
"""Responses kept under their ``Idempotency-Key``."""
GOALS = "AGENTOS_GATEWAY_GOALS"
"""Where each goal submitted through the gateway starts in the log (for ``GET /goals/{id}``)."""
SCHEDULES = "AGENTOS_GATEWAY_SCHEDULES"
"""The last tick each schedule fired."""


async def bucket(bus: Bus, name: str, *, ttl: float = 0, history: int = 1, description: str = "") -> KeyValue:
    """The bucket ``name``, created with ``ttl`` (seconds, 0 = keep) if it does not exist yet."""
    with contextlib.suppress(nats.js.errors.BucketNotFoundError, nats.js.errors.NotFoundError):
        found = await bus.js.key_value(name)
        await _warn_if_shorter(bus, name, ttl)
        return found
    config = api.KeyValueConfig(
        bucket=name,
        ttl=ttl or None,
        history=history,
        replicas=bus.settings.replicas,
        storage=api.StorageType.FILE,
        direct=True,
        description=description or None,
    )
    try:
        return await bus.js.create_key_value(config)
    except nats.js.errors.BadRequestError:  # another replica created it meanwhile
        return await bus.js.key_value(name)


async def _warn_if_shorter(bus: Bus, name: str, ttl: float) -> None:
    """An existing bucket keeps its TTL when a setting asks for longer: say so (only an admin may
    update it), since the records expire before the configured window ends."""
    if not ttl:
        return
    try:
        kept = (await bus.js.stream_info(f"KV_{name}")).config.max_age or 0
    except (nats.errors.Error, nats.js.errors.Error):
        return
    if kept and kept + 1 < ttl:
        log.warning(
            "bucket %s keeps entries %.0fs, less than the configured %.0fs: they expire early"
            " (an admin raises the bucket's max_age)",
            name,
            kept,
            ttl,
        )


def safe_key(*parts: str) -> str:
    """A KV key from arbitrary text: hex SHA-256 of the joined parts."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
