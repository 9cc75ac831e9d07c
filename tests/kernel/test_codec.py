"""The envelope codec: round trips, interoperability with the official cloudevents SDK, and each
kind of malformed input classified."""

from __future__ import annotations

import json

import pytest
from agentos_schemas import DecodeError, Event, decode, encode, event_subject
from agentos_schemas.events import GoalSubmitted, TaskCompleted
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent


def goal_event() -> Event[GoalSubmitted]:
    return Event(
        data=GoalSubmitted(goal_id="g-1", text="Research competitors"),
        source="test",
        type=GoalSubmitted.ce_type(),
        tenant="acme",
        subject="goal/g-1",
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        causationid="c-0",
        principal="user:ana",
    )


def test_round_trip_keeps_every_attribute() -> None:
    event = goal_event()
    back = decode(encode(event))
    assert back.attributes() == event.attributes()
    assert back.data == event.data


def test_official_sdk_reads_our_events() -> None:
    event = goal_event()
    ce = JSONFormat().read(None, encode(event))
    attrs = ce.get_attributes()
    assert attrs["type"] == "dev.agentos.goal.submitted.v1"
    assert attrs["id"] == event.id and attrs["source"] == "test"
    assert attrs["tenant"] == "acme" and attrs["correlationid"] == event.correlationid
    assert attrs["traceparent"].startswith("00-0af765")
    assert ce.get_data() == json.loads(event.data.model_dump_json())


def test_events_written_by_the_official_sdk_are_accepted() -> None:
    ce = CloudEvent(
        {
            "id": "sdk-1",
            "source": "pos-system",
            "type": GoalSubmitted.ce_type(),
            "tenant": "acme",
            "datacontenttype": "application/json",
        },
        {"goal_id": "g-2", "text": "Refund spike"},
    )
    event = decode(JSONFormat().write(ce))
    assert isinstance(event.data, GoalSubmitted) and event.data.goal_id == "g-2"
    assert event.tenant == "acme" and event.source == "pos-system"


def test_binary_mode_headers_are_accepted() -> None:
    ce = CloudEvent(
        {"id": "sdk-2", "source": "ticketing", "type": GoalSubmitted.ce_type(), "datacontenttype": "application/json"},
        {"goal_id": "g-3", "text": "Ticket"},
    )
    message = ce_http.to_binary(ce, JSONFormat())
    headers = {k: v for k, v in message.headers.items()}
    headers["ce-datacontenttype"] = headers.pop("content-type", "application/json")
    event = decode(message.body, headers)
    assert event.id == "sdk-2" and event.data.goal_id == "g-3"


def test_subject_derives_from_tenant_and_type() -> None:
    assert event_subject("acme", TaskCompleted.ce_type()) == "agentos.acme.task.completed"


BAD = [
    (b"\xff\xfe not utf-8", "encoding"),
    (b"plain text, not json", "not_cloudevent"),
    (b'{"id": "x", "source": "s"}', "not_cloudevent"),
    (b'{"specversion": "0.3", "id": "x", "source": "s", "type": "dev.agentos.goal.submitted.v1"}', "not_cloudevent"),
    (
        b'{"specversion": "1.0", "id": "x", "source": "s", "type": "dev.agentos.goal.exploded.v1", "data": {}}',
        "unknown_type",
    ),
    (
        b'{"specversion": "1.0", "id": "x", "source": "s", "type": "dev.agentos.goal.submitted.v1",'
        b' "data": {"goal_id": 7}}',
        "schema",
    ),
    (b'{"specversion": "1.0", "id": "x", "source": "s", "type": "dev.agentos.goal.submitted.v1"}', "claim_check"),
]


@pytest.mark.parametrize(("body", "code"), BAD)
def test_malformed_input_is_classified(body: bytes, code: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode(body)
    assert info.value.code == code
    assert info.value.reason


def test_oversized_is_refused_before_parsing() -> None:
    with pytest.raises(DecodeError) as info:
        decode(b"{" + b" " * 5000 + b"}", max_bytes=4096)
    assert info.value.code == "oversized"
