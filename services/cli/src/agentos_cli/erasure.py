"""`agentos audit erase`'s work on the bus: crypto-shred a data subject's key and record the
erasure in the log (an ``erasure.recorded`` event, no personal data in it).

Kept free of heavy imports: the kernel and the schemas are imported when the command runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agentos_schemas.events.erasure import ErasureRecorded


async def erase_subject(
    subject: str, *, tenant: str | None, reason: str, by: str | None
) -> tuple[ErasureRecorded, str]:
    """Destroy ``subject``'s key in ``tenant`` (default: the configured one) and publish the
    ``erasure.recorded`` fact, by the operator ``by`` if named; returns the fact and its event id."""
    from agentos_kernel import AgentOSError, Bus, KernelSettings
    from agentos_kernel.runtime import resolve
    from agentos_schemas import derived_event_id
    from agentos_schemas.events.erasure import ErasureRecorded
    from agentos_schemas.subjects import check_token

    settings = resolve(KernelSettings())
    if not settings.nats_url:
        raise AgentOSError("no NATS here: start AgentOS with `agentos up` (or set AGENTOS_NATS_URL)")
    where = check_token("tenant", tenant or settings.tenant)
    bus = await Bus.connect(settings, source="cli-audit")
    try:
        done = await bus.shredder.keys.erase(where, subject)
        fact = ErasureRecorded(key=done.key, revision=done.revision, reason=reason)
        event = bus.new(
            fact,
            tenant=where,
            principal=f"user:{by}" if by else None,
            id=derived_event_id("erasure", where, done.key, str(done.revision)),
        )
        await bus.publish(event)
        return fact, event.id
    finally:
        await bus.close()


__all__ = ["erase_subject"]
