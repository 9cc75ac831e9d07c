"""KPI rules: conditions over the event stream that become triggers.

A rule file (``AGENTOS_GATEWAY_KPI_RULES``, a YAML file or a folder of them)::

    rules:
      - name: refund-spike
        event: refund.recorded          # the event type it watches: a catalogue name, or a foreign
                                        # CloudEvents type integrators send (com.example.order.created)
        measure: count                  # or sum:<payload field>, e.g. sum:amount
        where: {currency: USD}          # optional: payload fields that must be equal
        window: 1h                      # tumbling windows (s, m, h, d), aligned to the epoch
        threshold: 5                    # a window "exceeds" when its value is > threshold
        consecutive: 3                  # fire when this many windows in a row exceed it
        tenant: acme                    # optional: one tenant only
        goal:                           # optional goal to open; a template over the numbers
          text: "Refunds over {threshold}/h for {consecutive} hours ({values}): investigate returns"
          workflow: returns

Windows are placed by the CloudEvent ``time`` of each event (so history can be replayed, and a
test can synthesise hours of events in a second). A rule fires **once per streak**: at the
moment the window that completes a run of ``consecutive`` exceeding windows crosses the
threshold. A longer streak does not fire again; a new one may after a window that did not exceed.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import msgspec
import yaml
from agentos_schemas import Event
from agentos_schemas.subjects import is_foreign
from pydantic import BaseModel, ConfigDict, Field, field_validator

from agentos_gateway.mapping import catalogue_type
from agentos_gateway.schedules import GoalSpec
from agentos_gateway.templates import resolve

_SHORT_NAME = re.compile(r"^[a-z_]+\.[a-z_]+$")  # a catalogue name: refund.recorded
_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def parse_duration(text: str) -> int:
    """``90s``, ``15m``, ``1h``, ``1d`` -> seconds."""
    m = _DURATION.match(text.strip())
    if not m or int(m.group(1)) == 0:
        raise ValueError(f"duration {text!r} must be a positive number with s, m, h or d")
    return int(m.group(1)) * _UNITS[m.group(2)]


class KpiRule(BaseModel):
    """One KPI rule (module docs)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    event: str
    measure: str = "count"
    where: dict[str, Any] = Field(default_factory=dict)
    window: str = "1h"
    threshold: float
    consecutive: int = Field(default=1, ge=1, le=1000)
    tenant: str | None = None
    goal: GoalSpec | None = None

    @field_validator("event")
    @classmethod
    def _event_type(cls, value: str) -> str:
        if not _SHORT_NAME.match(value) and is_foreign(value):
            return value  # a foreign type an integrator sends (kept under ingress.raw.<tenant>)
        return catalogue_type(value).ce_type()

    @field_validator("measure")
    @classmethod
    def _measure(cls, value: str) -> str:
        if value != "count" and not (value.startswith("sum:") and len(value) > 4):
            raise ValueError(f"measure {value!r} must be `count` or `sum:<field>`")
        return value

    @field_validator("window")
    @classmethod
    def _window(cls, value: str) -> str:
        parse_duration(value)
        return value

    @property
    def window_s(self) -> int:
        """The window length in seconds."""
        return parse_duration(self.window)

    def applies(self, event: Event[Any]) -> bool:
        """Whether ``event`` counts for this rule (type, tenant, ``where``)."""
        if event.type != self.event or (self.tenant is not None and event.tenant != self.tenant):
            return False
        if not self.where:
            return True
        payload = payload_of(event)
        return all(resolve(payload, path) == value for path, value in self.where.items())

    def amount(self, event: Event[Any]) -> float:
        """What ``event`` adds to its window: 1 for ``count``, the field for ``sum:<field>``."""
        if self.measure == "count":
            return 1.0
        value = resolve(payload_of(event), self.measure[4:])
        return float(value) if isinstance(value, int | float) else 0.0

    def window_start(self, when: dt.datetime) -> dt.datetime:
        """Start of the window holding ``when``."""
        seconds = int((when - _EPOCH).total_seconds())
        return _EPOCH + dt.timedelta(seconds=seconds - seconds % self.window_s)


def payload_of(event: Event[Any]) -> Any:
    """The data a rule reads: the payload's fields, or a foreign event's JSON data as sent (text
    and binary data have no fields: ``None``)."""
    if event.raw_data is not None and is_foreign(event.type):
        return msgspec.json.decode(event.raw_data) if event.data_form == "json" and event.raw_data else None
    return event.data.model_dump(mode="json")


def streak(rule: KpiRule, crossed: dt.datetime, values: dict[dt.datetime, float]) -> list[dt.datetime] | None:
    """The windows of the streak that ``crossed`` (just over the threshold) completes, or None.

    Fires only when neither the run before ``crossed`` nor the run after it already had
    ``consecutive`` windows on its own (that streak fired when it got them).
    """
    step = dt.timedelta(seconds=rule.window_s)

    def run(direction: int) -> list[dt.datetime]:
        found: list[dt.datetime] = []
        at = crossed + direction * step
        while len(found) < rule.consecutive and values.get(at, 0.0) > rule.threshold:
            found.append(at)
            at += direction * step
        return found

    before, after = run(-1), run(1)
    if len(before) >= rule.consecutive or len(after) >= rule.consecutive:
        return None
    if len(before) + 1 + len(after) < rule.consecutive:
        return None
    return [*reversed(before), crossed, *after]


def load_rules(path: Path | None) -> list[KpiRule]:
    """The rules in a file, or in every ``*.yaml`` of a folder (``rules: [...]`` or a bare list)."""
    if path is None:
        return []
    files = sorted(path.glob("*.yaml")) if path.is_dir() else [path]
    rules: list[KpiRule] = []
    for file in files:
        doc = yaml.safe_load(file.read_text()) or []
        items = doc.get("rules", []) if isinstance(doc, dict) else doc
        try:
            rules.extend(KpiRule.model_validate(item) for item in items)
        except ValueError as exc:
            raise ValueError(f"KPI rule file {file}: {exc}") from None
    if len({r.name for r in rules}) != len(rules):
        raise ValueError(f"KPI rule names repeat in {path}")
    return rules
