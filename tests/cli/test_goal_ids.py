"""Reading one goal's events starts where its id says it was made, and only where it says so."""

from __future__ import annotations

import datetime as dt

from agentos_cli.goals import from_goal_start, goal_start_time
from agentos_schemas import derived_event_id, new_event_id
from nats.js import api


def test_a_uuid7_goal_id_gives_its_start_time_a_derived_one_reads_from_the_start() -> None:
    made = goal_start_time(new_event_id())
    assert made is not None and abs((dt.datetime.now(dt.UTC) - made).total_seconds() - 1) < 5
    # Goal ids the gateway derives from idempotency keys (uuid5) carry no time: reading from a
    # made-up time would miss the goal's events.
    derived = derived_event_id("goal", "key:ops", "order-42")
    assert goal_start_time(derived) is None and goal_start_time("not-a-uuid") is None
    assert from_goal_start(derived) == {"deliver_policy": api.DeliverPolicy.ALL}
    assert from_goal_start(new_event_id())["deliver_policy"] == api.DeliverPolicy.BY_START_TIME
