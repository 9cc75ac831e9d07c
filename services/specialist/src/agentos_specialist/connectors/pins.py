"""Pinned tool definitions: the exact definition of each connector tool an operator trusts.

A definition is hashed over the canonical JSON of what the server lists (name, title,
description, input and output schema, annotations): any change of wording or schema changes the
hash. The first definition seen is pinned (trust on first use, announced as
``connector.announced``); a later, different one leaves the tool quarantined until
``agentos connectors approve`` pins it. Pins live in the ``AGENTOS_CONNECTORS`` key-value bucket
(``pin.<connector>.<tool>``), next to the latest definition seen (``seen.<connector>.<tool>``),
so every specialist replica and the CLI share them.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import nats.js.errors
from agentos_kernel import Bus
from nats.js import api

BUCKET = "AGENTOS_CONNECTORS"
_PLAIN = re.compile(r"^[A-Za-z0-9_-]{1,100}$")


def definition(tool: Any) -> dict[str, Any]:
    """What is pinned of an MCP ``Tool``: everything that tells a model what the tool does."""
    return {
        "name": tool.name,
        "title": getattr(tool, "title", None),
        "description": tool.description or "",
        "inputSchema": tool.input_schema,
        "outputSchema": getattr(tool, "output_schema", None),
        "annotations": tool.annotations.model_dump(mode="json", exclude_none=True) if tool.annotations else None,
    }


def definition_hash(defn: dict[str, Any]) -> str:
    raw = json.dumps(defn, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return "sha256:" + hashlib.sha256(raw.encode()).hexdigest()


def listing_hash(hashes: dict[str, str]) -> str:
    return definition_hash({"tools": dict(sorted(hashes.items()))})


def _key(kind: str, connector: str, tool: str) -> str:
    name = tool if _PLAIN.match(tool) else "h" + hashlib.sha256(tool.encode()).hexdigest()[:32]
    return f"{kind}.{connector}.{name}"


class PinStore:
    """The pins and last-seen definitions in ``AGENTOS_CONNECTORS``."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self._kv: Any = None

    async def kv(self) -> Any:
        if self._kv is None:
            try:
                self._kv = await self.bus.js.key_value(BUCKET)
            except nats.js.errors.BucketNotFoundError:
                self._kv = await self.bus.js.create_key_value(
                    api.KeyValueConfig(bucket=BUCKET, history=5, replicas=self.bus.settings.replicas)
                )
        return self._kv

    async def _get(self, key: str) -> dict[str, Any] | None:
        kv = await self.kv()
        try:
            entry = await kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            return None
        return dict(json.loads(entry.value or b"{}")) if entry.value else None

    async def pinned(self, connector: str, tool: str) -> str | None:
        """The hash pinned for ``tool`` of ``connector`` (None: never pinned)."""
        found = await self._get(_key("pin", connector, tool))
        return str(found["hash"]) if found else None

    async def pin(self, connector: str, tool: str, hash_: str, by: str) -> None:
        kv = await self.kv()
        await kv.put(_key("pin", connector, tool), json.dumps({"tool": tool, "hash": hash_, "by": by}).encode())

    async def pin_first(self, connector: str, tool: str, hash_: str, by: str) -> str:
        """Pin ``hash_`` unless a pin exists (another replica may pin first); returns the pin in force."""
        kv = await self.kv()
        body = json.dumps({"tool": tool, "hash": hash_, "by": by}).encode()
        try:
            await kv.create(_key("pin", connector, tool), body)
        except nats.js.errors.KeyWrongLastSequenceError:
            return await self.pinned(connector, tool) or hash_
        return hash_

    async def saw(self, connector: str, tool: str, hash_: str, defn: dict[str, Any]) -> None:
        """Record the definition a server lists now (what ``approve`` would pin)."""
        kv = await self.kv()
        await kv.put(
            _key("seen", connector, tool), json.dumps({"tool": tool, "hash": hash_, "definition": defn}).encode()
        )

    async def seen(self, connector: str, tool: str) -> dict[str, Any] | None:
        return await self._get(_key("seen", connector, tool))
