"""Connector files: ``connectors/*.yaml``, one MCP server each, with its tools classified.

A connector names how to reach its server (``stdio``: a command and its arguments, or ``http``: a
streamable-HTTP URL), the environment or headers it needs — a value that is a credential is
always a secret reference (``{secret: <name>}``, resolved from the secret store when the server is
started, never written in the file) — its limits, and a classification for each tool (globs
allowed). A tool the file does not classify is not offered to any agent (default deny) and is
listed by ``agentos connectors list``. The shipped connectors live next to this module; a
folder of the operator's own (``AGENTOS_CONNECTORS_DIR``) adds to them and overrides one of the
same name.
"""

from __future__ import annotations

import fnmatch
import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from agentos_kernel.exceptions import ConfigError
from agentos_schemas.rpc.policy import ToolClassification
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

_CREDENTIAL = re.compile(r"(?i)(token|secret|password|passwd|api[_-]?key|auth|credential|private)")


class SecretRef(BaseModel):
    """A value read from the secret store when the server starts (``{secret: crm_token}``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    secret: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
    prefix: str = ""
    """Put before the value (``"Bearer "`` for an Authorization header)."""


Value = str | SecretRef


def _no_literal_credentials(values: dict[str, Value], what: str) -> dict[str, Value]:
    for key, value in values.items():
        if isinstance(value, str) and _CREDENTIAL.search(key):
            raise ValueError(f"{what} {key!r} looks like a credential: give it as {{secret: <name>}}, not a literal")
    return values


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class Stdio(_Spec):
    """A server the runtime starts as a child process and talks to over stdin/stdout."""

    command: str = Field(min_length=1)
    args: tuple[str, ...] = ()
    env: dict[str, Value] = Field(default_factory=dict)
    """Added to the few inherited variables (PATH, HOME …) the SDK passes on."""
    cwd: str | None = None

    @field_validator("env")
    @classmethod
    def _env(cls, env: dict[str, Value]) -> dict[str, Value]:
        return _no_literal_credentials(env, "env")


class Http(_Spec):
    """A server reached over streamable HTTP."""

    url: str = Field(pattern=r"^https?://")
    headers: dict[str, Value] = Field(default_factory=dict)

    @field_validator("headers")
    @classmethod
    def _headers(cls, headers: dict[str, Value]) -> dict[str, Value]:
        return _no_literal_credentials(headers, "header")


class Limits(_Spec):
    """How long, how many and how much."""

    connect_timeout_s: float = Field(default=20.0, gt=0)
    call_timeout_s: float = Field(default=30.0, gt=0)
    """A call silent for longer is cancelled (the server is sent ``notifications/cancelled``); each
    progress notification the server sends for it starts this clock again, up to ``max_call_s``."""
    max_call_s: float = Field(default=300.0, gt=0)
    """The longest a call may run, however often it reports progress."""
    concurrency: int = Field(default=8, ge=1)
    """Calls in flight at once on this server."""
    rate_per_minute: int | None = Field(default=None, ge=1)
    """Calls started per minute; a call over it waits for a slot (within its timeout)."""
    idle_stop_s: float = Field(default=300.0, gt=0)
    """A stdio server unused this long is stopped (started again on the next use)."""
    health_every_s: float = Field(default=30.0, gt=0)
    max_result_bytes: int = Field(default=32_000, ge=256)
    """A larger result is cut to this for the prompt; the whole is kept as ``tool.result_stored``."""
    breaker_failures: int = Field(default=3, ge=1)
    """Consecutive failures (crash, timeout, refused start) that open the circuit breaker."""
    breaker_reset_s: float = Field(default=30.0, gt=0)
    """How long an open breaker fails calls at once before one is let through again."""
    relist_min_s: float = Field(default=1.0, ge=0)
    """Tool list changes are re-read at most this often (a server flooding them is not obeyed faster)."""


class ToolClass(ToolClassification):
    """A tool's classification in a connector file (``definition_hash`` is filled at discovery)."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class Connector(_Spec):
    """One connector file."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,39}$")
    """Prefix of its tools' names: ``git`` offers ``git.log``, ``git.status`` …"""
    description: str = ""
    stdio: Stdio | None = None
    http: Http | None = None
    builtin: bool = False
    """The tools built into the specialist (``connectors/builtin.yaml``): no server, bare names."""
    limits: Limits = Field(default_factory=Limits)
    tools: dict[str, ToolClass] = Field(default_factory=dict)
    """Classification per tool name (globs: ``"*"`` classifies every tool alike)."""
    resources: tuple[str, ...] = ()
    """Resource URIs (globs) of the server an agent may read when its charter lists
    ``<connector>.resources``."""

    @model_validator(mode="after")
    def _one_transport(self) -> Connector:
        given = sum(x is not None for x in (self.stdio, self.http)) + int(self.builtin)
        if given != 1:
            raise ValueError("a connector needs exactly one of: stdio, http (or builtin: true)")
        return self

    @property
    def transport(self) -> Literal["stdio", "http", "builtin"]:
        return "builtin" if self.builtin else "stdio" if self.stdio is not None else "http"

    def classify(self, tool: str) -> ToolClass | None:
        """The classification of ``tool`` (exact name first, then the first glob that matches)."""
        found = self.tools.get(tool)
        if found is not None:
            return found
        return next((c for pattern, c in self.tools.items() if fnmatch.fnmatchcase(tool, pattern)), None)

    def qualified(self, tool: str) -> str:
        """The name agents and charters use for ``tool`` of this connector."""
        return tool if self.builtin else f"{self.name}.{tool}"


def shipped_dir() -> Path:
    """The connectors shipped with AgentOS."""
    return Path(str(resources.files("agentos_specialist") / "connectors"))


def parse_connector(text: str, origin: str = "<string>") -> Connector:
    try:
        data: Any = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{origin}: not valid YAML: {exc}") from None
    try:
        return Connector.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "<root>"
        raise ConfigError(f"{origin}: {where}: {first['msg']}") from None


def load_connectors(*folders: Path | None) -> dict[str, Connector]:
    """Every connector of ``folders`` in order (a later one overrides an earlier of the same name)."""
    found: dict[str, Connector] = {}
    for folder in filter(None, folders):
        seen: set[str] = set()
        for path in sorted(folder.glob("*.yaml")):
            connector = parse_connector(path.read_text(), str(path))
            if connector.name in seen:
                raise ConfigError(f"{path}: connector {connector.name!r} is defined twice in {folder}")
            seen.add(connector.name)
            found[connector.name] = connector
    return found
