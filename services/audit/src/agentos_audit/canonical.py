"""The bytes the audit chain hashes, and the chain step itself.

A stored message's *canonical bytes* are the exact NATS message body as JetStream keeps it —
what AgentOS writes is a structured-mode CloudEvent, so the body is the whole event. A
binary-mode event (``ce-*`` headers) carries attributes outside the body, so its canonical
bytes are a one-line prefix with those headers (JSON, keys sorted) before the body:
``BINARY_MAGIC + <headers JSON> + b"\\n" + body``. Pure functions, no I/O.

The chain: ``hash_n = sha256(hash_{n-1} || canonical_n)`` in stream-sequence order, starting
from :data:`GENESIS` (32 zero bytes) before the first sequence the projection holds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import msgspec

GENESIS = bytes(32)
BINARY_MAGIC = b"\x00ce-binary\x00"
_encoder = msgspec.json.Encoder(order="sorted")


def canonical_bytes(body: bytes, headers: Mapping[str, str] | None) -> bytes:
    """The bytes of one stored message that the chain covers."""
    if not headers or "ce-specversion" not in headers:
        return body
    ce = {k: v for k, v in headers.items() if k.lower().startswith("ce-")}
    return BINARY_MAGIC + _encoder.encode(ce) + b"\n" + body


def split_canonical(raw: bytes) -> tuple[bytes, dict[str, str] | None]:
    """Inverse of :func:`canonical_bytes`: (body, ce-headers or None)."""
    if not raw.startswith(BINARY_MAGIC):
        return raw, None
    head, _, body = raw[len(BINARY_MAGIC) :].partition(b"\n")
    headers: dict[str, str] = msgspec.json.decode(head, type=dict[str, str])
    return body, headers


def chain_step(prev: bytes, canonical: bytes) -> bytes:
    """``sha256(prev || canonical)``."""
    return hashlib.sha256(prev + canonical).digest()


__all__ = ["BINARY_MAGIC", "GENESIS", "canonical_bytes", "chain_step", "split_canonical"]
