"""Agent charters: YAML front matter (who the agent is, what it may use) plus Markdown instructions.

Specialists load charters from files and announce them on the bus (``agent.announced``), so the
context-manager and orchestrator learn every agent from events, never from another service's files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class CharterError(ValueError):
    """A charter file is malformed; the message names the file and the field."""


class MemoryPolicy(BaseModel):
    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    kinds: tuple[Literal["working", "episodic", "semantic"], ...] = ("working", "episodic", "semantic")
    """Which memories the agent may be shown."""
    k: int = Field(default=5, ge=0, le=50)
    """How many entries, at most, go into its context."""


class Charter(BaseModel):
    """An agent's definition."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    version: str = "1"
    role: str = ""
    """One line: what this agent is for."""
    capabilities: tuple[str, ...]
    """Plan steps with one of these capabilities can be routed to this agent."""
    model: str
    """Model alias from the model registry (or a litellm model string)."""
    fallbacks: tuple[str, ...] = ()
    """Aliases tried in order when the model fails."""
    tools: tuple[str, ...] = ()
    """Tools the agent may call; nothing else is offered to it."""
    output_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    """JSON Schema its final answer must satisfy."""
    budget_usd: float = Field(default=0.50, ge=0)
    """Spend cap for one task."""
    max_tool_rounds: int = Field(default=4, ge=0, le=20)
    output_retries: int = Field(default=2, ge=0, le=5)
    """Re-asks with the validation error before the task fails."""
    context_tokens: int = Field(default=6000, ge=256)
    """Token budget for the assembled context."""
    capacity: int = Field(default=4, ge=1)
    """Tasks one replica runs at once for this agent."""
    memory: MemoryPolicy = Field(default_factory=MemoryPolicy)
    escalation: str = "operator"
    """Who takes over when the agent cannot finish."""
    claims: dict[str, str] = Field(default_factory=dict)
    """Output fields that state what the agent's writes did, each with the tool whose effects it
    states (``{sent: send_email}``, ``{stored: propose_memory}``): a boolean claims at least one
    done, an integer how many. The orchestrator attests each against the recorded effects."""
    instructions: str = ""
    """The Markdown body: the agent's standing instructions."""

    @model_validator(mode="after")
    def _claims_are_checkable(self) -> Charter:
        props: dict[str, Any] = self.output_schema.get("properties") or {}
        for name, tool in self.claims.items():
            if tool not in self.tools:
                raise ValueError(f"claims: {name!r} names tool {tool!r}, which the charter does not list")
            prop: dict[str, Any] = props.get(name) or {}
            kind = prop.get("type")
            if kind not in ("boolean", "integer"):
                raise ValueError(
                    f"claims: output field {name!r} must be a boolean or an integer "
                    f"property of output_schema (it is {kind or 'not declared'})"
                )
        return self

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


def parse_charter(text: str, origin: str = "<string>") -> Charter:
    if not text.startswith("---"):
        raise CharterError(f"{origin}: a charter starts with YAML front matter between '---' lines")
    try:
        _, front, body = text.split("---", 2)
        meta: object = yaml.safe_load(front) or {}
    except (ValueError, yaml.YAMLError) as exc:
        raise CharterError(f"{origin}: front matter is not valid YAML: {exc}") from None
    if not isinstance(meta, dict):
        raise CharterError(f"{origin}: front matter must be a mapping")
    try:
        return Charter.model_validate({**meta, "instructions": body.strip()})
    except ValidationError as exc:
        first = exc.errors()[0]
        raise CharterError(f"{origin}: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None


def load_charters(folder: Path) -> dict[str, Charter]:
    charters: dict[str, Charter] = {}
    for path in sorted(folder.glob("*.md")):
        charter = parse_charter(path.read_text(), str(path))
        if charter.name in charters:
            raise CharterError(f"{path}: agent {charter.name!r} is defined twice")
        charters[charter.name] = charter
    return charters
