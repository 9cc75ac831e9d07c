"""The connector ring: every connector's tools, as :class:`~agentos_specialist.tools.Tool` objects on
the specialist's one tool path.

A charter's ``tools:`` names built-ins (``search_documents``) and connector tools (``git.log``,
``time.*``; ``<connector>.resources`` for the resources its connector allows). Resolving them
starts the servers named (on first use: the specialist discovers the connectors its charters name
when it starts, before it announces its agents), reads their tool lists, and offers only the tools
that are classified and whose definition matches its pin; what was found is announced as
``connector.announced`` whenever a server's listing changes.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any

import mcp_types as types
from agentos_kernel import Bus
from agentos_kernel.exceptions import Unavailable
from agentos_schemas.events.connectors import ConnectorAnnounced, ConnectorDegraded, ToolDefinition
from agentos_schemas.rpc.policy import ToolClassification

from agentos_specialist.connectors.pins import PinStore, definition, definition_hash, listing_hash
from agentos_specialist.connectors.server import ConnectorFailed, McpServer
from agentos_specialist.connectors.spec import Connector, ToolClass
from agentos_specialist.tools import Tool, ToolContext, ToolError, action_of

log = logging.getLogger("agentos.specialist.connectors")
IDEMPOTENCY_META = "io.agentos/idempotency-key"
"""``_meta`` key carrying a write's idempotency key to the server (a server may de-duplicate on it)."""


@dataclass
class Discovery:
    """What one read of a server's tool list found."""

    offered: dict[str, Tool] = field(default_factory=dict)
    definitions: tuple[ToolDefinition, ...] = ()
    listing_hash: str = ""


def render(result: types.CallToolResult) -> str:
    """A tool result as text for the model: the structured result when there is one."""
    parts: list[str] = []
    for block in result.content:
        if isinstance(block, types.TextContent):
            parts.append(block.text)
        elif isinstance(block, types.EmbeddedResource) and isinstance(block.resource, types.TextResourceContents):
            parts.append(block.resource.text)
        else:
            parts.append(f"[{block.type} content omitted]")
    text = "\n".join(parts)
    if result.is_error:
        raise ToolError(text[:1000] or "the tool reported an error")
    if result.structured_content is not None:
        return json.dumps(result.structured_content, ensure_ascii=False, default=str)
    return text


class ConnectorRing:
    """The specialist's connectors: built-ins and MCP servers, resolved for each charter."""

    def __init__(self, bus: Bus, connectors: dict[str, Connector], builtins: dict[str, Tool], instance: str) -> None:
        self.bus = bus
        self.connectors = connectors
        self.instance = instance
        self.pins = PinStore(bus)
        self.servers: dict[str, McpServer] = {}
        self._found: dict[str, tuple[int, Discovery]] = {}
        self._announced: dict[str, str] = {}
        spec = connectors.get("builtin")
        self.builtins = {n: _classified(t, spec) for n, t in builtins.items()}

    def server(self, name: str) -> McpServer:
        found = self.servers.get(name)
        if found is None:
            spec = self.connectors[name]

            async def degraded(reason: str, failures: int, retry_after_s: float) -> None:
                data = ConnectorDegraded(
                    connector=name,
                    instance=self.instance,
                    reason=reason,
                    failures=failures,
                    retry_after_s=retry_after_s,
                )
                await self.bus.publish(self.bus.new(data, tenant="default"))

            found = self.servers[name] = McpServer(spec, degraded)
        return found

    async def close(self) -> None:
        for server in self.servers.values():
            await server.close()

    async def resolve(self, names: tuple[str, ...]) -> dict[str, Tool]:
        """The tools ``names`` (a charter's list) offer now, by name. Raises ConnectorFailed /
        ConnectorDegraded when a connector named cannot be reached."""
        tools: dict[str, Tool] = {}
        for pattern in names:
            prefix, dot, rest = pattern.partition(".")
            if not dot or prefix not in self.connectors:
                if pattern in self.builtins:
                    tools[pattern] = self.builtins[pattern]
                continue
            if rest == "resources":
                tools[pattern] = self._resource_tool(self.connectors[prefix])
                continue
            found = await self.discover(prefix)
            tools |= {n: t for n, t in found.offered.items() if fnmatch.fnmatchcase(n, pattern)}
        return tools

    async def prepare(self, names: tuple[str, ...]) -> None:
        """Discover (and so announce) every connector ``names`` (charters' tools) uses, so that the
        context-manager knows their definitions before it assembles a task's context. Best effort:
        a connector that cannot be reached now is tried again when a task needs it."""
        for name in sorted({p.partition(".")[0] for p in names if "." in p} & set(self.connectors)):
            if self.connectors[name].builtin:
                continue
            try:
                await self.discover(name)
            except (ConnectorFailed, Unavailable) as exc:
                log.warning("connector %s could not be discovered at start (tried again on use): %s", name, exc)

    async def discover(self, name: str) -> Discovery:
        """The connector's tools as they are offered now (re-read when its server announced a change)."""
        server = self.server(name)
        listing = await server.tools()
        cached = self._found.get(name)
        if cached is not None and cached[0] == server.relists and not _quarantined(cached[1]):
            return cached[1]
        found = await self._classify(self.connectors[name], server, listing)
        self._found[name] = (server.relists, found)
        if self._announced.get(name) != found.listing_hash:
            await self._announce(self.connectors[name], server, found)
        return found

    async def _classify(self, spec: Connector, server: McpServer, listing: list[types.Tool]) -> Discovery:
        offered: dict[str, Tool] = {}
        surveyed = await survey(spec, listing, self.pins, pin_as=f"first use ({self.instance})")
        for tool, found, cls in surveyed:
            if found.state == "offered" and cls is not None:
                offered[found.name] = self._mcp_tool(spec, server, tool, cls, found.definition_hash)
            elif found.state == "quarantined":
                log.warning("tool %s is quarantined: %s", found.name, found.reason)
        definitions = tuple(d for _, d, _ in surveyed)
        return Discovery(offered, definitions, listing_hash({d.name: d.definition_hash for d in definitions}))

    async def _announce(self, spec: Connector, server: McpServer, found: Discovery) -> None:
        client = server.client
        info = client.server_info if client is not None else None
        data = ConnectorAnnounced(
            connector=spec.name,
            instance=self.instance,
            server=f"{info.name} {info.version}" if info is not None else "",
            protocol_version=client.protocol_version if client is not None else "",
            transport=spec.transport,
            listing_hash=found.listing_hash,
            tools=found.definitions,
        )
        await self.bus.publish(self.bus.new(data, tenant="default"))
        self._announced[spec.name] = found.listing_hash

    def _mcp_tool(self, spec: Connector, server: McpServer, tool: types.Tool, cls: ToolClass, hash_: str) -> Tool:
        async def run(ctx: ToolContext, args: dict[str, Any]) -> str:
            meta: types.RequestParamsMeta | None = None
            if ctx.call_key:
                meta = types.RequestParamsMeta()
                meta[IDEMPOTENCY_META] = ctx.call_key
            return render(await server.call(tool.name, args, meta))

        classification = ToolClassification(**cls.model_dump(exclude={"definition_hash"}), definition_hash=hash_)
        return Tool(
            spec.qualified(tool.name),
            (tool.description or "")[:2000],
            dict(tool.input_schema or {"type": "object"}),
            run,
            action_of(classification.access),
            f"{spec.name}:{tool.name}",
            classification=classification,
            connector=spec.name,
            max_result_bytes=spec.limits.max_result_bytes,
        )

    def _resource_tool(self, spec: Connector) -> Tool:
        """``<connector>.resources``: list the resources the connector file allows (no ``uri``), or
        read one of them; a URI outside its ``resources:`` is refused before the server is asked."""
        server = self.server(spec.name)

        def allowed(uri: str) -> bool:
            return any(fnmatch.fnmatchcase(uri, p) for p in spec.resources)

        async def run(ctx: ToolContext, args: dict[str, Any]) -> str:
            uri = str(args.get("uri") or "")
            if not uri:
                found = [r for r in await server.list_resources() if allowed(str(r.uri))]
                return "\n".join(f"{r.uri} ({r.name}): {r.description or ''}".rstrip(": ") for r in found) or "none"
            if not allowed(uri):
                raise ToolError(f"resource {uri!r} is not one {spec.name!r} allows ({', '.join(spec.resources)})")
            result = await server.read_resource(uri)
            return "\n".join(
                getattr(c, "text", f"[{c.mime_type or 'binary'} content omitted]") for c in result.contents
            )

        return Tool(
            f"{spec.name}.resources",
            f"Read a resource of {spec.name} by URI (allowed: {', '.join(spec.resources) or 'none'}); "
            "without a URI, list the ones there are.",
            {"type": "object", "properties": {"uri": {"type": "string"}}},
            run,
            "tool_call",
            f"{spec.name}:resources",
            classification=ToolClassification(access="read", data_classes=("internal",), untrusted=True),
            connector=spec.name,
            max_result_bytes=spec.limits.max_result_bytes,
        )


async def survey(
    spec: Connector, listing: list[types.Tool], pins: PinStore, pin_as: str | None
) -> list[tuple[types.Tool, ToolDefinition, ToolClass | None]]:
    """Each listed tool with its state: ``unclassified`` (the connector file does not classify it),
    ``quarantined`` (its definition differs from the pinned one, or — never pinned — its description
    carries instructions to the model), else ``offered``. With ``pin_as``, a first definition is
    pinned (trust on first use) and what the server lists is recorded for ``approve``."""
    out: list[tuple[types.Tool, ToolDefinition, ToolClass | None]] = []
    for tool in listing:
        defn = definition(tool)
        hash_ = definition_hash(defn)
        name = spec.qualified(tool.name)
        cls = spec.classify(tool.name)
        if cls is None:
            out.append((tool, ToolDefinition(name=name, definition_hash=hash_, state="unclassified"), None))
            continue
        pinned = await pins.pinned(spec.name, tool.name)
        warning = suspicious(defn)
        if pin_as is not None:
            await pins.saw(spec.name, tool.name, hash_, defn)
            if pinned is None and warning is None:
                pinned = await pins.pin_first(spec.name, tool.name, hash_, pin_as)
        if pinned == hash_:
            found = ToolDefinition(name=name, definition_hash=hash_, state="offered", pinned_hash=hash_)
        else:
            reason = warning if pinned is None else "its definition changed since it was approved (a rug pull?)"
            state = "quarantined" if pinned is not None or pin_as is not None or warning else "new"
            found = ToolDefinition(
                name=name, definition_hash=hash_, state=state, pinned_hash=pinned or "", reason=reason or ""
            )
        out.append((tool, found, cls))
    return out


_INJECTION = re.compile(
    r"(?i)(ignore (all |any )?(previous|prior|above|earlier) instructions|<important>|system prompt|"
    r"do not (tell|inform|mention)|before (using|calling) this tool|you must (also )?(call|send|read)|"
    r"send (the|all|this) (conversation|data|contents?|messages?|history))"
)


def suspicious(defn: dict[str, Any]) -> str | None:
    """Why a tool's description looks like instructions to the model (tool poisoning), if it does."""
    text = " ".join(str(defn.get(k) or "") for k in ("title", "description")) + json.dumps(defn.get("inputSchema"))
    found = _INJECTION.search(text)
    return f"its description addresses the model ({found.group(0)!r}): approve it by hand" if found else None


def _quarantined(found: Discovery) -> bool:
    """A quarantined tool is looked at again on every resolve: an operator may have approved it."""
    return any(d.state == "quarantined" for d in found.definitions)


def _classified(tool: Tool, spec: Connector | None) -> Tool:
    """A built-in with the classification ``connectors/builtin.yaml`` gives it (if any)."""
    cls = spec.classify(tool.name) if spec is not None else None
    if cls is None:
        return tool
    tool.classification = ToolClassification(**cls.model_dump(exclude={"definition_hash"}))
    return tool


__all__ = ["ConnectorFailed", "ConnectorRing", "Discovery", "render", "survey"]
