"""The sample payloads in services/gateway/examples (what the README sends) map and validate."""

from __future__ import annotations

import json
from pathlib import Path

from agentos_gateway.mapping import SHIPPED_DIR, load_mappings
from agentos_schemas import codec
from agentos_schemas.events import GoalSubmitted
from agentos_schemas.events.ingress import RefundRecorded, TicketReceived

EXAMPLES = Path(__file__).resolve().parents[2] / "services" / "gateway" / "examples"


def mapped_types(source: str, name: str) -> list[type]:
    payload = json.loads((EXAMPLES / name).read_text())
    mapped = load_mappings([SHIPPED_DIR])[source].apply(
        payload, seed="example", tenant="acme", principal="webhook:example"
    )
    return [type(e.data) for e in mapped.events]


def test_the_zendesk_example_opens_a_ticket_and_a_goal() -> None:
    assert mapped_types("zendesk", "zendesk-ticket-created.json") == [TicketReceived, GoalSubmitted]


def test_the_square_example_records_a_refund() -> None:
    assert RefundRecorded in mapped_types("square", "square-refund-created.json")


def test_the_cloudevent_example_is_a_valid_ticket() -> None:
    event = codec.decode((EXAMPLES / "ticket-cloudevent.json").read_bytes())
    assert isinstance(event.data, TicketReceived) and event.data.ticket_id == "T-1001"


def test_every_example_is_covered() -> None:
    assert {p.name for p in EXAMPLES.glob("*.json")} == {
        "zendesk-ticket-created.json",
        "square-refund-created.json",
        "ticket-cloudevent.json",
    }
