"""Where a time falls in the event log: the first stream sequence JetStream stored at or after it.

The log's own time of an event is when the log took it, which is what an operator means by
"events of the last hour"; an event's ``time`` attribute is its source's claim (a vendor's ticket
time, hours or years older). Filters by log time become sequence bounds.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agentos_kernel import Bus


async def first_seq_at(bus: Bus, when: dt.datetime) -> int:
    """The first sequence stored at or after ``when``; one past the last when none is."""
    import nats.errors
    from agentos_schemas import EVENTS_STREAM
    from nats.js import api

    info = await bus.js.stream_info(EVENTS_STREAM)
    config = api.ConsumerConfig(
        ack_policy=api.AckPolicy.NONE,
        deliver_policy=api.DeliverPolicy.BY_START_TIME,
        opt_start_time=when.astimezone(dt.UTC),
        inactive_threshold=30.0,
        mem_storage=True,
    )
    psub = await bus.js.pull_subscribe(subject="", stream=EVENTS_STREAM, config=config)
    try:
        if (await psub.consumer_info()).num_pending == 0:
            return info.state.last_seq + 1
        try:
            msgs = await psub.fetch(1, timeout=5.0)
        except (TimeoutError, nats.errors.TimeoutError):
            return info.state.last_seq + 1
        return msgs[0].metadata.sequence.stream
    finally:
        await psub.unsubscribe()


async def seq_bounds(bus: Bus, since: dt.datetime | None, until: dt.datetime | None) -> tuple[int | None, int | None]:
    """``[from, to)`` stream sequences of the events the log took in ``[since, until)``."""
    return (await first_seq_at(bus, since) if since else None, await first_seq_at(bus, until) if until else None)
