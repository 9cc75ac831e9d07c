"""Foreign CloudEvents as triggers: an event of a type a mapping subscribes to (its
``cloudevents:`` list) is kept as it came *and* mapped, in the same publish.

The mapping's payload is the event as a structured document — ``type``, ``source``, ``subject``,
``time``, its extension attributes, and ``data`` (JSON data decoded; text as a string) — so a rule
can test ``type == com.example.order.created`` and template ``{data.order.id}``. The mapped events
are caused by the foreign one (``causationid``) and their ids derive from (tenant, source, id): the
same event sent twice maps to the same events, which the log stores once. A KPI rule may watch a
foreign type directly (``agentos_gateway.kpi``).
"""

from __future__ import annotations

from typing import Any

import msgspec
from agentos_schemas import Event
from agentos_schemas.subjects import is_foreign

from agentos_gateway.mapping import Mapping, MappingError
from agentos_gateway.problems import Problem


def payload(event: Event[Any]) -> dict[str, Any]:
    """A foreign event as the document its mapping reads (module docs)."""
    doc: dict[str, Any] = {k: msgspec.json.decode(v) for k, v in (event.wire or {}).items()}
    if event.data_form == "json" and event.raw_data:
        doc["data"] = msgspec.json.decode(event.raw_data)
    elif event.data_form == "text" and event.raw_data is not None:
        doc["data"] = event.raw_data.decode("utf-8")
    return doc


def triggered(subscribed: dict[str, Mapping], events: list[Event[Any]]) -> list[tuple[str, list[Event[Any]]]]:
    """For each foreign event a mapping subscribes to: (the mapping's source, the events it maps to).
    A subscribed event its mapping cannot map is refused (422), like any mapped payload."""
    found: list[tuple[str, list[Event[Any]]]] = []
    for event in events:
        mapping = subscribed.get(event.type) if is_foreign(event.type) else None
        if mapping is None:
            continue
        try:
            mapped = mapping.apply(
                payload(event),
                seed=event.id,
                tenant=event.tenant,
                principal=event.principal or f"cloudevent:{event.source}",
                identity=("cloudevent", event.tenant, event.source, event.id),
            )
        except MappingError as exc:
            raise Problem(
                422, exc.code, f"{event.type} {event.id!r}, mapping {mapping.source!r}: {exc.reason}", errors=exc.errors
            ) from None
        for out in mapped.events:
            out.causationid = event.id
        found.append((mapping.source, mapped.events))
    return found


__all__ = ["payload", "triggered"]
