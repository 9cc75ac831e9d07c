"""`agentos contracts`: generate ``contracts/`` from the typed catalogue in ``agentos_schemas``.

Writes one JSON Schema per event type (the whole structured CloudEvent, with ``data`` typed), the
envelope schema, an index, and an AsyncAPI 3.0 document produced by FastStream from the same
pydantic models, and ``mcp-tools.json``: the tools and resources of AgentOS's MCP server (their
input and output schemas). ``--check`` regenerates in memory and reports any file that differs. Writing
refuses a change that breaks an event type already stored under the same version
(:mod:`agentos_cli.contract_compat`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agentos_kernel.exceptions import InvalidInput
from agentos_schemas import CATALOGUE
from agentos_schemas.envelope import envelope_json_schema
from agentos_schemas.events import EventData
from agentos_schemas.subjects import DLQ_STREAM, EVENTS_STREAM, parse_type
from faststream.nats import NatsBroker
from faststream.specification import AsyncAPI

from agentos_cli.contract_compat import breaking

SCHEMA_DRAFT = "https://json-schema.org/draft/2020-12/schema"


def event_schema(cls: type[EventData]) -> dict[str, Any]:
    """JSON Schema of a structured-mode CloudEvent whose ``data`` is ``cls``."""
    payload = cls.model_json_schema(ref_template="#/$defs/{model}")
    defs = payload.pop("$defs", {})
    envelope = envelope_json_schema()
    props = dict(envelope["properties"])
    props["type"] = {"const": cls.ce_type()}
    props["dataschema"] = {"const": cls.dataschema()}
    props["data"] = payload
    return {
        "$schema": SCHEMA_DRAFT,
        "$id": cls.dataschema(),
        "title": cls.ce_type(),
        "description": (cls.__doc__ or "").strip() or f"{cls.event_name} event",
        "type": "object",
        "properties": props,
        "required": sorted({*envelope.get("required", []), "data"}),
        "$defs": defs,
    }


def channel(type_: str) -> str:
    domain, event, _ = parse_type(type_)
    return f"agentos.{{tenant}}.{domain}.{event}"


def asyncapi_document() -> dict[str, Any]:
    broker = NatsBroker()
    for type_, cls in sorted(CATALOGUE.items()):
        broker.publisher(
            channel(type_),
            schema=cls,
            title=type_,
            stream=EVENTS_STREAM,
            description=(cls.__doc__ or "").strip() or None,
        )
    spec = AsyncAPI(
        broker,
        title="AgentOS event catalogue",
        version="1",
        schema_version="3.0.0",
        description=f"Every AgentOS event is a structured CloudEvent stored in {EVENTS_STREAM}; "
        f"dead letters go to {DLQ_STREAM}. Envelope: contracts/envelope.json.",
    )
    doc: dict[str, Any] = json.loads(spec.to_specification().to_json())
    return doc


def render() -> dict[str, str]:
    """Every contract file, path relative to ``contracts/`` -> text."""
    files: dict[str, str] = {}
    index = []
    for type_, cls in sorted(CATALOGUE.items()):
        _domain, _event, version = parse_type(type_)
        files[f"events/{type_}.json"] = _dump(event_schema(cls))
        index.append(
            {
                "type": type_,
                "version": version,
                "subject": channel(type_),
                "schema": f"events/{type_}.json",
                "description": (cls.__doc__ or "").strip(),
            }
        )
    envelope = envelope_json_schema() | {"$schema": SCHEMA_DRAFT}
    files["envelope.json"] = _dump(envelope)
    files["events/index.json"] = _dump({"events": index})
    files["asyncapi.json"] = _dump(asyncapi_document())
    files["mcp-tools.json"] = _dump(mcp_tools_document())
    return files


def mcp_tools_document() -> dict[str, Any]:
    """What AgentOS's MCP server offers (:mod:`agentos_gateway.mcp_server.contract`)."""
    from agentos_gateway.mcp_server.contract import tools_document

    return tools_document()


def _dump(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write(root: Path) -> list[str]:
    """Write every contract file under ``root`` (and remove stale ones); refuses, writing nothing,
    a change that breaks an event type stored under the same version (:func:`incompatible`)."""
    files = render()
    if problems := incompatible(root, files):
        raise ContractBreak(problems)
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    known = set(files)
    stale = [p for p in root.rglob("*.json") if str(p.relative_to(root)) not in known]
    for p in stale:
        p.unlink()
    return sorted(files)


class ContractBreak(InvalidInput):
    """A schema change that events already in the log would not survive."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(
            "breaking change to a stored event type: "
            + "; ".join(problems)
            + ". Keep the field (or its accepted values), or add a new version of the event type (….v2)"
        )
        self.problems = problems


def incompatible(root: Path, files: dict[str, str]) -> list[str]:
    """How the contracts in ``files`` break those under ``root`` (see :mod:`agentos_cli.contract_compat`);
    an event type may leave the catalogue only once a newer version of it is in."""
    problems: list[str] = []
    for path in sorted(root.glob("events/*.json")):
        rel = str(path.relative_to(root))
        if rel == "events/index.json":
            continue
        old = json.loads(path.read_text())
        if rel in files:
            problems += [f"{old['title']} {p}" for p in breaking(old, json.loads(files[rel]))]
            continue
        domain, event, version = parse_type(old["title"])
        newer = [r for r in files if r.startswith(f"events/dev.agentos.{domain}.{event}.v")]
        if not any(parse_type(r.removeprefix("events/").removesuffix(".json"))[2] > version for r in newer):
            problems.append(f"{old['title']}: removed from the catalogue with no newer version")
    return problems


def drift(root: Path) -> list[str]:
    """Files under ``root`` that differ from what the code generates (missing, changed or extra)."""
    files = render()
    problems = [rel for rel, text in files.items() if not (root / rel).exists() or (root / rel).read_text() != text]
    problems += [str(p.relative_to(root)) for p in root.rglob("*.json") if str(p.relative_to(root)) not in files]
    return sorted(problems)
