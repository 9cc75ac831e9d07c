"""The agents the context-manager knows, learned only from ``agent.announced`` events in the log."""

from __future__ import annotations

import datetime as dt
from typing import Any

from agentos_schemas import Event
from agentos_schemas.charter import Charter
from agentos_schemas.events import AgentAnnounced

PLATFORM_TENANT = "default"


class AgentRegistry:
    """Charters by tenant and agent name; the latest announcement (by event time) wins.

    Agents announced under the platform tenant (``default``, what specialists use unless told to
    serve one tenant) serve every tenant. A charter announced under one tenant is visible only to
    that tenant, and overrides a platform agent of the same name there.
    Applying the same or an older announcement again changes nothing, so replay followed by the
    live consumer (which may redeliver what replay already saw) is safe.
    """

    def __init__(self) -> None:
        self._charters: dict[str, dict[str, tuple[dt.datetime, Charter]]] = {}

    def apply(self, event: Event[Any]) -> bool:
        """Record an ``agent.announced`` event; returns whether it changed the registry."""
        if not isinstance(event.data, AgentAnnounced):
            return False
        charter = event.data.charter
        agents = self._charters.setdefault(event.tenant, {})
        known = agents.get(charter.name)
        when = event.time or dt.datetime.min.replace(tzinfo=dt.UTC)
        if known is not None and (known[0] > when or known[1] == charter):
            return False
        agents[charter.name] = (when, charter)
        return True

    def get(self, tenant: str, agent: str) -> Charter | None:
        """The charter of ``agent`` for ``tenant`` (its own, else the platform's), or None."""
        known = self._charters.get(tenant, {}).get(agent) or self._charters.get(PLATFORM_TENANT, {}).get(agent)
        return known[1] if known else None

    def __len__(self) -> int:
        return sum(len(agents) for agents in self._charters.values())
