"""Declarative mappings from third-party payloads to typed AgentOS events.

A mapping is one YAML file, ``<source>.yaml``, chosen by the ``{source}`` of the request::

    source: square
    event_id: event_id          # path to the vendor's unique event id (the dedup seed)
    time: created_at            # path to when it happened: the facts' CloudEvent `time` (a goal is
                                # stamped when the gateway takes it: its deadline counts from then)
    rules:                      # the first rule whose `when` all hold is used
      - name: refund-created
        when: ["type == refund.created"]
        emit:
          - type: refund.recorded             # a catalogue name (or full CloudEvent type)
            subject: "refund/{data.object.refund.id}"
            data:
              refund_id: "{data.object.refund.id}"
              amount: "{data.object.refund.amount_money.amount}"   # ... and so on

Templates, paths and conditions are described in :mod:`agentos_gateway.templates`. An emitted
``goal.submitted`` gets its ``goal_id`` from its own (derived) event id unless the mapping sets
one, and every event of the delivery is correlated with that goal. Event ids derive from
(mapping, vendor event id, rule, position), so the same delivery always yields the same events;
a signed webhook's derive from (webhook source, ``webhook-id``, position), the identity its
replay protection uses, so two sources sharing a mapping never collide.
No matching rule, a missing field or a payload that fails the catalogue is a
:class:`MappingError` naming the rule, the event and the field.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from agentos_schemas import CATALOGUE, Event, EventData, derived_event_id
from agentos_schemas.events import GoalSubmitted
from agentos_schemas.subjects import ce_type
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agentos_gateway.templates import Condition, TemplateError, render, resolve

SHIPPED_DIR = Path(str(resources.files("agentos_gateway") / "mappings"))
CLOUDEVENT = "cloudevent"
"""The built-in pass-through 'mapping': the body is a structured (or batched) CloudEvent."""


class MappingError(ValueError):
    """A payload cannot be mapped; ``code`` classifies why, the message says where."""

    def __init__(self, code: str, reason: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.errors = errors


def catalogue_type(name: str) -> type[EventData]:
    """``refund.recorded`` or ``dev.agentos.refund.recorded.v1`` -> its payload class."""
    full = name if name in CATALOGUE else ce_type(name, 1)
    if full not in CATALOGUE:
        raise ValueError(f"event type {name!r} is not in the catalogue")
    return CATALOGUE[full]


class EmitSpec(BaseModel):
    """One event a rule produces."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str
    subject: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)

    @field_validator("type")
    @classmethod
    def _known(cls, value: str) -> str:
        return catalogue_type(value).ce_type()


class RuleSpec(BaseModel):
    """A rule: conditions on the payload, and what it emits when they all hold."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    when: tuple[str, ...] = ()
    emit: tuple[EmitSpec, ...] = Field(min_length=1)

    @field_validator("when")
    @classmethod
    def _parse(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for text in value:
            Condition.parse(text)
        return value


class MappingSpec(BaseModel):
    """A whole mapping file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    description: str = ""
    event_id: str | None = None
    time: str | None = None
    cloudevents: tuple[str, ...] = ()
    """Foreign CloudEvents types this mapping also subscribes to: such an event sent to
    ``POST /events`` is kept as it came and mapped too (the payload is the structured event:
    ``type``, ``source``, ``subject``, its extensions and ``data``)."""
    rules: tuple[RuleSpec, ...] = Field(min_length=1)


@dataclass(frozen=True)
class Mapped:
    """The events one payload maps to, and the rule that produced them."""

    rule: str
    events: list[Event[Any]]


class Mapping:
    """A loaded mapping, ready to apply."""

    def __init__(self, spec: MappingSpec) -> None:
        self.spec = spec
        self.source = spec.source
        self._conditions = {r.name: [Condition.parse(c) for c in r.when] for r in spec.rules}

    def match(self, payload: Any) -> RuleSpec:
        """The first rule whose conditions all hold; MappingError naming what was checked otherwise."""
        for rule in self.spec.rules:
            if all(c.holds(payload) for c in self._conditions[rule.name]):
                return rule
        tried = "; ".join(
            f"{r.name}: " + ", ".join(f"{c.text} (payload has {c.actual(payload)})" for c in self._conditions[r.name])
            for r in self.spec.rules
        )
        raise MappingError("no_matching_rule", f"no rule of mapping {self.source!r} matches the payload: {tried}")

    def apply(
        self, payload: Any, *, seed: str, tenant: str, principal: str, identity: tuple[str, ...] | None = None
    ) -> Mapped:
        """Map one payload; ``seed`` identifies the delivery when the payload has no event id.
        ``identity`` (a signed webhook's source and ``webhook-id``) names the delivery instead: the
        event ids derive from it alone, the key its replay protection uses too."""
        if not isinstance(payload, dict):
            raise MappingError(
                "not_an_object", f"a {self.source} payload is a JSON object, not {type(payload).__name__}"
            )
        rule = self.match(payload)
        vendor_id = resolve(payload, self.spec.event_id) if self.spec.event_id else None
        key = str(vendor_id) if isinstance(vendor_id, str | int) and str(vendor_id) else seed
        when = _time(resolve(payload, self.spec.time)) if self.spec.time else None
        ids = [
            derived_event_id(*identity, str(i))
            if identity is not None
            else derived_event_id("mapping", self.source, key, rule.name, str(i))
            for i in range(len(rule.emit))
        ]
        goal_index = next((i for i, e in enumerate(rule.emit) if e.type == GoalSubmitted.ce_type()), None)
        datas = [self._data(rule, i, payload, ids[i]) for i in range(len(rule.emit))]
        goal_id = getattr(datas[goal_index], "goal_id", None) if goal_index is not None else None
        events = [
            self._event(rule, i, payload, datas[i], ids[i], tenant, principal, when, goal_id)
            for i in range(len(rule.emit))
        ]
        return Mapped(rule.name, events)

    def _data(self, rule: RuleSpec, index: int, payload: Any, event_id: str) -> EventData:
        emit = rule.emit[index]
        where = f"rule {rule.name!r}, emit {index} ({emit.type})"
        try:
            fields = render(emit.data, payload)
        except TemplateError as exc:
            raise MappingError("missing_field", f"{where}: {exc}") from None
        cls = CATALOGUE[emit.type]
        if cls is GoalSubmitted:
            fields.setdefault("goal_id", event_id)
        try:
            return cls.model_validate(fields)
        except ValidationError as exc:
            errors = [
                {"field": ".".join(str(p) for p in e["loc"]) or "<root>", "detail": e["msg"]} for e in exc.errors()[:10]
            ]
            text = "; ".join(f"{e['field']}: {e['detail']}" for e in errors)
            raise MappingError(
                "schema_invalid", f"{where}: the mapped payload fails {emit.type}: {text}", errors
            ) from None

    def _event(
        self,
        rule: RuleSpec,
        index: int,
        payload: Any,
        data: EventData,
        event_id: str,
        tenant: str,
        principal: str,
        when: dt.datetime | None,
        goal_id: str | None,
    ) -> Event[Any]:
        emit = rule.emit[index]
        try:
            subject = render(emit.subject, payload) if emit.subject else None
        except TemplateError as exc:
            raise MappingError("missing_field", f"rule {rule.name!r}, emit {index} subject: {exc}") from None
        if isinstance(data, GoalSubmitted):
            subject = subject or f"goal/{data.goal_id}"
            # A goal is asked of AgentOS now, whatever the vendor's clock said about its event: its
            # deadline counts from here, so a late or retried delivery still gets its full time.
            when = None
        return Event(
            data=data,
            id=event_id,
            source=f"gateway/{self.source}",
            type=emit.type,
            tenant=tenant,
            subject=str(subject) if subject is not None else None,
            time=when,
            dataschema=data.dataschema(),
            correlationid=goal_id or event_id,
            principal=principal,
        )


def _time(value: Any) -> dt.datetime | None:
    if isinstance(value, int | float):
        return dt.datetime.fromtimestamp(value, dt.UTC)
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    return None


def subscribers(mappings: dict[str, Mapping]) -> dict[str, Mapping]:
    """The mapping subscribed to each foreign CloudEvents type (one per type)."""
    found: dict[str, Mapping] = {}
    for name, mapping in sorted(mappings.items()):
        for type_ in mapping.spec.cloudevents:
            if type_ in found:
                raise ValueError(f"mappings {found[type_].source!r} and {name!r} both subscribe to {type_!r}")
            found[type_] = mapping
    return found


def is_cloudevent(payload: Any) -> bool:
    """Whether a decoded body is a structured CloudEvent or a batch of them (``specversion`` set)."""
    items = payload if isinstance(payload, list) else [payload]
    return bool(items) and all(isinstance(i, dict) and "specversion" in i for i in items)


def matching(mappings: dict[str, Mapping], payload: Any) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Which mappings (and rules) a payload matches, and why each other one does not: what lets a
    sender leave the source out (``agentos send`` without ``--source``)."""
    if is_cloudevent(payload):
        return [{"source": CLOUDEVENT, "rule": "", "why": "the body is a structured CloudEvent (specversion)"}], []
    matches, unmatched = [], []
    for source, mapping in sorted(mappings.items()):
        if not isinstance(payload, dict):
            unmatched.append({"source": source, "reason": f"a {source} payload is a JSON object"})
            continue
        try:
            rule = mapping.match(payload)
        except MappingError as exc:
            unmatched.append({"source": source, "reason": exc.reason})
            continue
        why = "; ".join(rule.when) or "the rule has no conditions"
        matches.append({"source": source, "rule": rule.name, "why": why})
    return matches, unmatched


def load_mappings(folders: Iterable[Path | None]) -> dict[str, Mapping]:
    """Every ``*.yaml`` mapping in ``folders`` (later folders override earlier ones), by source."""
    found: dict[str, Mapping] = {}
    for folder in folders:
        if folder is None or not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.yaml")):
            try:
                spec = MappingSpec.model_validate(yaml.safe_load(path.read_text()))
            except (ValidationError, yaml.YAMLError, ValueError) as exc:
                raise ValueError(f"mapping {path}: {exc}") from None
            if spec.source != path.stem:
                raise ValueError(f"mapping {path}: source {spec.source!r} must match the file name")
            found[spec.source] = Mapping(spec)
    return found
