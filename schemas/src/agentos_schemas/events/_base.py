"""Base class and registration for event payloads."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from agentos_schemas.subjects import ce_type, parse_type

#: Every registered payload class, by CloudEvent ``type``.
CATALOGUE: dict[str, type[EventData]] = {}


class EventData(BaseModel):
    """A typed event payload: a fact in the past tense, or an explicit ``…requested`` command.

    Subclasses set ``event_name`` (``<domain>.<event>``) and ``event_version``; the
    CloudEvent ``type`` and NATS subject derive from them.
    """

    model_config = ConfigDict(frozen=True, extra="ignore", use_attribute_docstrings=True)

    event_name: ClassVar[str]
    event_version: ClassVar[int] = 1

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "event_name" in cls.__dict__:
            type_ = ce_type(cls.event_name, cls.event_version)
            parse_type(type_)
            if type_ in CATALOGUE:
                raise TypeError(f"event type {type_!r} registered twice")
            CATALOGUE[type_] = cls

    @classmethod
    def ce_type(cls) -> str:
        return ce_type(cls.event_name, cls.event_version)

    @classmethod
    def dataschema(cls) -> str:
        return f"agentos:contracts/events/{cls.ce_type()}.json"
