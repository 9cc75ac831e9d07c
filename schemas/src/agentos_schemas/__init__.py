"""AgentOS typed event catalogue: the CloudEvents envelope, payload types, naming rules, codec.

Pure types and pure functions; no I/O. Every service shares this package and nothing else
(besides the bus kernel).

The catalogue (``events``, ``CATALOGUE``, ``EventData``) is imported on first use (PEP 562):
a process that only speaks request/reply or reads raw envelopes (the CLI's everyday commands)
does not pay for building every payload model. :func:`decode` loads it when it needs a type.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from agentos_schemas.codec import DecodeError, decode, encode, headers_for
from agentos_schemas.envelope import Event, WireEvent, derived_event_id, id_time, new_event_id
from agentos_schemas.subjects import (
    DLQ_STREAM,
    EVENTS_STREAM,
    NamingError,
    dlq_subject,
    event_subject,
)

if TYPE_CHECKING:
    from agentos_schemas import events
    from agentos_schemas.events import CATALOGUE, EventData

__all__ = [
    "CATALOGUE",
    "DLQ_STREAM",
    "EVENTS_STREAM",
    "DecodeError",
    "Event",
    "EventData",
    "NamingError",
    "WireEvent",
    "decode",
    "derived_event_id",
    "dlq_subject",
    "encode",
    "event_subject",
    "events",
    "headers_for",
    "id_time",
    "new_event_id",
]


def __getattr__(name: str) -> Any:
    if name not in ("events", "CATALOGUE", "EventData"):
        raise AttributeError(f"module 'agentos_schemas' has no attribute {name!r}")
    module = importlib.import_module("agentos_schemas.events")
    value = module if name == "events" else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
