"""Ingress facts: what outside systems told AgentOS (tickets, sales, refunds), and the triggers
the gateway fires from the clock (schedules) and from the event stream (KPI rules).

Amounts are integers in the currency's smallest unit (cents for USD), as POS systems send them.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from agentos_schemas.events._base import EventData
from agentos_schemas.personal import DATA_SUBJECT, PERSONAL


class TicketReceived(EventData):
    """A support ticket was opened in a ticketing system.

    The requester's name, email and what they wrote are personal: stored encrypted with the
    requester's key (``requester_id`` is the data subject), erasable with ``agentos audit erase``."""

    event_name = "ticket.received"

    system: str
    """The ticketing system (``zendesk`` …)."""
    ticket_id: str
    subject: Annotated[str, PERSONAL] = ""
    """The ticket's title, as the requester wrote it (personal)."""
    description: Annotated[str, PERSONAL] = ""
    """The requester's message (personal)."""
    priority: str | None = None
    """As the system names it (``low``, ``normal``, ``high``, ``urgent``)."""
    status: str | None = None
    requester_id: Annotated[str | None, DATA_SUBJECT] = None
    """The requester's id in the ticketing system: the data subject whose key seals the personal fields."""
    requester_name: Annotated[str | None, PERSONAL] = None
    """The requester's name (personal)."""
    requester_email: Annotated[str | None, PERSONAL] = None
    """The requester's email (personal; pattern redaction replaces it with ``[EMAIL]`` first)."""
    tags: tuple[str, ...] = ()
    url: str | None = None
    """Link to the ticket in the system, when known."""


class TicketUpdated(EventData):
    """A ticket changed in a ticketing system (status, priority, tags, subject …).

    ``previous``/``current`` may be the requester's own words (a changed subject or description),
    so they are personal, sealed with the requester's key."""

    event_name = "ticket.updated"

    system: str
    ticket_id: str
    change: str
    """What changed, as the system names it (``status_changed`` …)."""
    status: str | None = None
    priority: str | None = None
    previous: Annotated[str | None, PERSONAL] = None
    """The changed field's previous value, when the system sends it (personal)."""
    current: Annotated[str | None, PERSONAL] = None
    """The changed field's new value, when the system sends it (personal)."""
    requester_id: Annotated[str | None, DATA_SUBJECT] = None
    """The requester's id, when known: the data subject (without it, each event gets a key of its own)."""
    tags: tuple[str, ...] = ()


class SaleRecorded(EventData):
    """A payment was taken at a point of sale or online."""

    event_name = "sale.recorded"

    system: str
    """The POS or payment system (``square`` …)."""
    payment_id: str
    amount: int
    """In the currency's smallest unit (cents)."""
    currency: str = Field(min_length=3, max_length=3)
    order_id: str | None = None
    location_id: str | None = None
    status: str | None = None


class RefundRecorded(EventData):
    """A refund was issued (or requested) against a payment."""

    event_name = "refund.recorded"

    system: str
    refund_id: str
    amount: int
    """In the currency's smallest unit (cents)."""
    currency: str = Field(min_length=3, max_length=3)
    payment_id: str | None = None
    order_id: str | None = None
    location_id: str | None = None
    status: str | None = None
    reason: str | None = None


class ScheduleFired(EventData):
    """A cron schedule's tick came due and fired (once, even across restarts and replicas)."""

    event_name = "schedule.fired"

    schedule: str
    """The schedule's name."""
    cron: str
    scheduled_for: dt.datetime
    """The tick that fired (a tick missed while the gateway was down fires once, late)."""
    goal_id: str | None = None
    """The goal the schedule submitted with it, if any."""


class KpiWindow(BaseModel):
    """One window of a KPI rule and the value measured in it."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    start: dt.datetime
    end: dt.datetime
    value: float


class KpiTriggered(EventData):
    """A KPI rule over the event stream tripped: its measure exceeded the threshold in enough
    consecutive windows. Carries the numbers that tripped it."""

    event_name = "kpi.triggered"

    rule: str
    """The rule's name."""
    measure: str
    """``count`` or ``sum:<field>`` of the watched event type."""
    event_type: str
    """The CloudEvent type the rule watches."""
    threshold: float
    """The value each window had to exceed."""
    consecutive: int = Field(ge=1)
    windows: tuple[KpiWindow, ...]
    """The consecutive windows that exceeded it, oldest first (values at the time it fired)."""
    goal_id: str | None = None
    """The goal the rule opened, if it opens one."""
