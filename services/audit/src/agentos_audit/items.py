"""From stored messages to chain items, the one path the projector, ``rebuild`` and ``verify`` share."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Executor
from types import SimpleNamespace

from agentos_kernel import Bus
from agentos_schemas import codec
from agentos_schemas.envelope import WireEvent
from agentos_schemas.subjects import is_foreign

from agentos_audit.canonical import canonical_bytes
from agentos_audit.derive import Rejection, build_row, foreign_payload, open_envelope
from agentos_audit.logread import Stored
from agentos_audit.writer import Item


class Letter:
    """A stored message in the shape :meth:`agentos_kernel.Consumer.dead_letter` reads; its ack is
    a no-op, because the batch is acknowledged after its commit."""

    def __init__(self, stored: Stored) -> None:
        self.data, self.headers, self.subject = stored.body, stored.headers, stored.subject
        self.metadata = SimpleNamespace(sequence=SimpleNamespace(stream=stored.seq), num_delivered=1)

    async def ack(self) -> None:
        """Nothing: the batch is acknowledged after its commit."""
        return None


def derive_inline(stored: Stored, max_bytes: int) -> Item | None:
    """The item of a message whose payload is in the message; None when a claim-checked payload
    must first be fetched from the object store (see :func:`derive_item`). Pure, so it can run in a
    worker process."""
    raw = canonical_bytes(stored.body, stored.headers)
    opened = open_envelope(raw, max_bytes)
    if not isinstance(opened, WireEvent):
        return Item(stored.seq, raw, opened)
    if is_foreign(opened.type):  # kept as it came: its data is never claim-checked
        return Item(stored.seq, raw, build_row(stored.seq, opened, foreign_payload(opened), stored.time, raw))
    try:
        payload = codec.inline_data(opened)
    except codec.DecodeError as exc:
        return Item(stored.seq, raw, Rejection(exc.code, exc.reason))
    if payload is None:
        return None
    return Item(stored.seq, raw, build_row(stored.seq, opened, payload, stored.time, raw))


def derive_batch(batch: Sequence[Stored], max_bytes: int) -> list[Item | None]:
    """:func:`derive_inline` over a batch (one call per batch to a worker process)."""
    return [derive_inline(stored, max_bytes) for stored in batch]


async def derive_item(bus: Bus, stored: Stored | None, seq: int) -> Item:
    """The chain item of one stored message (None: the stream lacks ``seq``)."""
    if stored is None:
        return Item(seq, b"", None)
    item = derive_inline(stored, bus.settings.max_event_bytes)
    if item is not None:
        return item
    raw = canonical_bytes(stored.body, stored.headers)
    opened = open_envelope(raw, bus.settings.max_event_bytes)
    assert isinstance(opened, WireEvent)
    try:
        payload = await bus.payload(opened)
    except codec.DecodeError as exc:
        return Item(seq, raw, Rejection(exc.code, exc.reason))
    return Item(seq, raw, build_row(seq, opened, payload, stored.time, raw))


async def derive_range(
    bus: Bus,
    after: int,
    stored: Sequence[Stored],
    executor: Executor | None = None,
    fetch: Callable[[int], Awaitable[Stored | None]] | None = None,
    *,
    yield_every: int = 0,
) -> list[Item]:
    """Items for sequences ``after+1 .. stored[-1].seq`` (``stored`` in sequence order). With an
    ``executor`` the inline payloads are derived in it; a sequence missing from ``stored`` is read
    from the stream by ``fetch``, or chained as missing. With ``yield_every``, the event loop gets a
    turn after that many items (so a write in flight and the log reader progress meanwhile)."""
    if not stored:
        return []
    max_bytes = bus.settings.max_event_bytes
    items: list[Item] = []
    if executor is None and stored[0].seq == after + 1 and stored[-1].seq - after == len(stored):
        for message in stored:  # the usual case: consecutive sequences, all inline
            item = derive_inline(message, max_bytes)
            items.append(item if item is not None else await derive_item(bus, message, message.seq))
            if yield_every and len(items) % yield_every == 0:
                await asyncio.sleep(0)
        return items
    if executor is not None:
        loop = asyncio.get_running_loop()
        done = await loop.run_in_executor(executor, derive_batch, list(stored), max_bytes)
        by_seq: Mapping[int, tuple[Stored, Item | None]] = {s.seq: (s, d) for s, d in zip(stored, done, strict=True)}
    else:
        by_seq = {s.seq: (s, None) for s in stored}
    for seq in range(after + 1, stored[-1].seq + 1):
        message, item = by_seq.get(seq, (None, None))
        if message is None and fetch is not None:
            message = await fetch(seq)
        if item is None and message is not None and executor is None:
            item = derive_inline(message, max_bytes)
        items.append(item if item is not None else await derive_item(bus, message, seq))
        if yield_every and len(items) % yield_every == 0:
            await asyncio.sleep(0)
    return items


__all__ = ["Letter", "derive_batch", "derive_inline", "derive_item", "derive_range"]
