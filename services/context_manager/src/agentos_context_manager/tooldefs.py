"""The connector tool definitions the context-manager knows, learned from the log.

A specialist announces each connector's tools with their definition hashes and states
(``connector.announced``: on first discovery — at its start for the connectors its charters
name — and whenever a server's listing changes); an operator's approval of a changed definition
pins it (``connector.approved``). From these the context-manager records, in each
``context.ready`` manifest, the pinned definition hash of every offered connector tool the
agent's charter names (``manifest.tool_definitions``): what the agent saw. A quarantined or
unclassified tool is not offered, so it is not recorded.

Connectors are platform-wide (announced under the ``default`` tenant); the latest event wins.
"""

from __future__ import annotations

import fnmatch
from typing import Any

from agentos_schemas import Event
from agentos_schemas.events.connectors import ConnectorAnnounced, ConnectorApproved

ANNOUNCED = "agentos.*.connector.announced"
APPROVED = "agentos.*.connector.approved"


def names(pattern: str, name: str) -> bool:
    """Whether a charter's ``tools:`` entry names connector tool ``name`` (``time.*`` globs; the
    specialist's rule, ``agentos_specialist.toolpath.listed``)."""
    return pattern == name or ("." in pattern and fnmatch.fnmatchcase(name, pattern))


class ToolDefinitions:
    """Each connector tool's offered definition hash, by ``<connector>.<tool>``."""

    def __init__(self) -> None:
        self._offered: dict[str, dict[str, str]] = {}
        """connector → tool → the pinned hash it is offered at."""
        self._listed: dict[str, dict[str, str]] = {}
        """connector → tool → the hash its server lists (what an approval pins)."""

    def apply(self, event: Event[Any]) -> bool:
        """Fold a ``connector.announced`` or ``connector.approved``; returns whether it was one."""
        data = event.data
        if isinstance(data, ConnectorAnnounced):
            self._listed[data.connector] = {t.name: t.definition_hash for t in data.tools}
            self._offered[data.connector] = {
                t.name: t.pinned_hash or t.definition_hash for t in data.tools if t.state == "offered"
            }
            return True
        if isinstance(data, ConnectorApproved):
            # The approved definition is pinned; it is offered once the server lists that definition.
            if self._listed.get(data.connector, {}).get(data.tool) == data.definition_hash:
                self._offered.setdefault(data.connector, {})[data.tool] = data.definition_hash
            return True
        return False

    def offered(self, tools: tuple[str, ...]) -> dict[str, str]:
        """The hash of every offered connector tool that ``tools`` (a charter's list) names."""
        out: dict[str, str] = {}
        for pattern in tools:
            connector, dot, _ = pattern.partition(".")
            if not dot:
                continue
            for name, hash_ in self._offered.get(connector, {}).items():
                if names(pattern, name):
                    out[name] = hash_
        return dict(sorted(out.items()))

    def __len__(self) -> int:
        return sum(len(tools) for tools in self._offered.values())
