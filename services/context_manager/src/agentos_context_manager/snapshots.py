"""Snapshot and restore of what an agent saw.

The ``context.ready`` event in the immutable log *is* the snapshot: its messages are exactly
what the model received and its manifest says where each part came from. Restoring a task's
context means finding that event again. (The specialist persists its own in-progress
conversation separately; this restores the starting context.)
"""

from __future__ import annotations

from typing import Any

from agentos_kernel.bus import Bus
from agentos_kernel.replay import replay
from agentos_schemas import Event
from agentos_schemas.events import ContextReady


async def restore(bus: Bus, task_id: str, *, tenant: str = "*") -> ContextReady | None:
    """The context assembled for ``task_id``, read back from the log, or None if there is none.

    For now this replays ``agentos.<tenant>.context.ready`` (every tenant unless one is given)
    and picks the first event for the task; the audit index will make it a single lookup.
    Payloads moved to the object store (claim checks) are fetched transparently.
    """
    found: list[ContextReady] = []

    def apply(event: Event[Any]) -> None:
        if not found and isinstance(event.data, ContextReady) and event.data.task_id == task_id:
            found.append(event.data)

    await replay(bus, [f"agentos.{tenant}.context.ready"], apply)
    return found[0] if found else None
