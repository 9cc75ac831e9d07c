"""Scenario files: ordered rules that decide, deterministically, how the offline model answers.

A scenario is a list of :class:`Rule` objects checked in order; the first rule whose
:class:`Match` holds for a request answers it. Rules may be limited to their first ``times``
matching requests; the per-rule counters live in memory and :meth:`Scenario.reset` clears them.
"""

from __future__ import annotations

import fnmatch
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

Fault = Literal["server_error", "timeout", "invalid_json", "refusal", "rate_limit"]

_AGENT_LINE = re.compile(r"^\s*agent:\s*(\S+)\s*$", re.MULTILINE)
_TEMPLATE_FIELD = re.compile(r"\{(user|agent|model|n|tool_result)\}")
USER_TEMPLATE_LIMIT = 200


def message_text(content: Any) -> str:
    """Return the text of a chat message ``content`` (a string, ``None`` or a list of parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [_part_text(part) for part in content]
        return "\n".join(text for text in texts if text)
    return str(content)


def _part_text(part: Any) -> str:
    if isinstance(part, str):
        return part
    if isinstance(part, dict):
        text = part.get("text")
        return text if isinstance(text, str) else ""
    return ""


@dataclass(frozen=True)
class RequestFacts:
    """The facts of one chat request that rules can match on."""

    model: str
    system: str
    user: str
    agent: str
    has_tool_result: bool
    users: tuple[str, ...] = ()
    """Every user message of the conversation, oldest first."""
    turn: int = 1
    """Which model turn of the conversation this is: 1 + the assistant messages already in it."""
    tool_result: str = ""
    """The text of the newest tool result in the conversation (``""``: none)."""

    @classmethod
    def from_request(cls, model: str, messages: list[dict[str, Any]]) -> RequestFacts:
        """Extract the facts from a request's model name and its list of messages."""
        system = "\n".join(message_text(m.get("content")) for m in messages if m.get("role") in ("system", "developer"))
        users = [message_text(m.get("content")) for m in messages if m.get("role") == "user"]
        found = _AGENT_LINE.search(system)
        return cls(
            model=model,
            system=system,
            user=users[-1] if users else "",
            agent=found.group(1) if found else "",
            has_tool_result=any(m.get("role") in ("tool", "function") for m in messages),
            users=tuple(users),
            turn=1 + sum(1 for m in messages if m.get("role") == "assistant"),
            tool_result=next(
                (message_text(m.get("content")) for m in reversed(messages) if m.get("role") in ("tool", "function")),
                "",
            ),
        )


class Match(BaseModel):
    """Conditions of a rule; every condition given must hold (an empty match always holds)."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(default=None, description="fnmatch glob on the request's model name")
    agent: str | None = Field(default=None, description="agent named by an `agent: <name>` system line")
    system_contains: str | None = None
    user_contains: str | None = Field(default=None, description="substring of the last user message")
    user_regex: str | None = Field(default=None, description="regex searched in the last user message")
    has_tool_result: bool | None = None
    any_user_contains: str | None = Field(
        default=None, description="substring of any user message of the conversation, not only the last"
    )
    turn: int | None = Field(
        default=None, ge=1, description="the conversation's model turn: 1 + the assistant messages in it"
    )

    @field_validator("user_regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            re.compile(value)
        return value

    def holds(self, facts: RequestFacts) -> bool:
        """Whether every condition given holds for ``facts``."""
        checks = (
            self.model is None or fnmatch.fnmatchcase(facts.model, self.model),
            self.agent is None or facts.agent == self.agent,
            self.system_contains is None or self.system_contains in facts.system,
            self.user_contains is None or self.user_contains in facts.user,
            self.user_regex is None or re.search(self.user_regex, facts.user) is not None,
            self.has_tool_result is None or facts.has_tool_result == self.has_tool_result,
            self.any_user_contains is None or any(self.any_user_contains in text for text in facts.users),
            self.turn is None or facts.turn == self.turn,
        )
        return all(checks)


class ToolCallSpec(BaseModel):
    """One tool call the model makes: the function name and its (templated) arguments."""

    model_config = ConfigDict(extra="forbid")

    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class Respond(BaseModel):
    """What a rule answers: exactly one of content, json, tool_calls or fault."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    content: str | None = None
    json_value: Any = Field(default=None, alias="json")
    tool_calls: list[ToolCallSpec] | None = None
    fault: Fault | None = None
    template: bool = Field(
        default=True,
        description="fill {user}, {agent}, {model}, {n} and {tool_result}; false serves the answer verbatim",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> Respond:
        given = [self.content, self.json_value, self.tool_calls, self.fault]
        if sum(value is not None for value in given) != 1:
            raise ValueError("respond needs exactly one of: content, json, tool_calls, fault")
        if self.tool_calls is not None and not self.tool_calls:
            raise ValueError("respond.tool_calls must name at least one call")
        return self


class Rule(BaseModel):
    """One scenario rule: a name, its match, optional limits and delay, and its answer."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    match: Match = Field(default_factory=Match)
    times: int | None = Field(default=None, ge=1, description="apply only to the first N matches")
    latency_ms: int | None = Field(default=None, ge=0, description="delay before answering")
    respond: Respond


@dataclass(frozen=True)
class RuleHit:
    """A matched rule and its 1-based match count ``n``."""

    rule: Rule
    n: int


class Scenario(BaseModel):
    """An ordered list of rules plus settings; the first matching rule answers a request."""

    model_config = ConfigDict(extra="forbid")

    rules: list[Rule] = Field(default_factory=list)
    models: list[str] = Field(default_factory=lambda: ["offline-fast", "offline-smart"])
    timeout_s: float = Field(default=30.0, gt=0, description="sleep of a `timeout` fault without latency")

    _counts: dict[str, int] = PrivateAttr(default_factory=dict)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @field_validator("rules")
    @classmethod
    def _unique_names(cls, rules: list[Rule]) -> list[Rule]:
        names = [rule.name for rule in rules]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"rule names must be unique, repeated: {', '.join(duplicates)}")
        return rules

    @classmethod
    def load(cls, path: str | Path) -> Scenario:
        """Load a scenario from a YAML file."""
        return cls.from_yaml(Path(path).read_text(encoding="utf-8"))

    @classmethod
    def from_yaml(cls, text: str) -> Scenario:
        """Parse a scenario from YAML text (an empty document is an empty scenario)."""
        data = yaml.safe_load(text) or {}
        if not isinstance(data, dict):
            raise ValueError("a scenario file must be a mapping with a `rules` list")
        return cls.model_validate(data)

    def match(self, facts: RequestFacts) -> RuleHit | None:
        """Return the first rule matching ``facts`` and count the match, or ``None``."""
        with self._lock:
            for rule in self.rules:
                if not rule.match.holds(facts):
                    continue
                seen = self._counts.get(rule.name, 0)
                if rule.times is not None and seen >= rule.times:
                    continue
                self._counts[rule.name] = seen + 1
                return RuleHit(rule=rule, n=seen + 1)
        return None

    def reset(self) -> None:
        """Forget how often each rule has matched."""
        with self._lock:
            self._counts.clear()

    @property
    def counts(self) -> dict[str, int]:
        """A copy of the per-rule match counters."""
        with self._lock:
            return dict(self._counts)

    def served_models(self) -> list[str]:
        """Model names this scenario serves: ``models`` plus literal (non-glob) rule models."""
        names = list(self.models)
        for rule in self.rules:
            glob = rule.match.model
            if glob and not any(ch in glob for ch in "*?[") and glob not in names:
                names.append(glob)
        return names


def render(value: Any, variables: dict[str, str]) -> Any:
    """Fill ``{user}``, ``{agent}``, ``{model}``, ``{n}`` and ``{tool_result}`` (the newest tool
    result's text, like ``{user}`` its first 200 characters) in every string inside ``value``.

    Other braces are left alone, so JSON-looking text survives templating unchanged.
    """
    if isinstance(value, str):
        return _TEMPLATE_FIELD.sub(lambda found: variables.get(found.group(1), found.group(0)), value)
    if isinstance(value, list):
        return [render(item, variables) for item in value]
    if isinstance(value, dict):
        return {key: render(item, variables) for key, item in value.items()}
    return value


def template_variables(facts: RequestFacts, n: int) -> dict[str, str]:
    """The template variables for a request matched the ``n``-th time by a rule."""
    return {
        "user": facts.user[:USER_TEMPLATE_LIMIT],
        "agent": facts.agent,
        "model": facts.model,
        "n": str(n),
        "tool_result": facts.tool_result[:USER_TEMPLATE_LIMIT],
    }
