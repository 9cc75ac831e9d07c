"""AgentOS typed event catalogue: the CloudEvents envelope, payload types, naming rules, codec.

Pure types and pure functions; no I/O. Every service shares this package and nothing else
(besides the bus kernel).
"""

from agentos_schemas import events
from agentos_schemas.codec import DecodeError, decode, encode, headers_for
from agentos_schemas.envelope import Event, WireEvent, derived_event_id, id_time, new_event_id
from agentos_schemas.events import CATALOGUE, EventData
from agentos_schemas.subjects import (
    DLQ_STREAM,
    EVENTS_STREAM,
    NamingError,
    dlq_subject,
    event_subject,
)

__all__ = [
    "CATALOGUE", "DLQ_STREAM", "EVENTS_STREAM", "DecodeError", "Event", "EventData", "NamingError",
    "WireEvent", "decode", "derived_event_id", "dlq_subject", "id_time", "encode", "event_subject", "events",
    "headers_for", "new_event_id",
]
