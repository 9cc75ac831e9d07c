"""Policies as code: the typed rules of one policy version, loaded from a folder of YAML files.

A policy folder holds ``policy.yaml`` (the rules, with a ``version`` string) and optionally
``tests.yaml`` (cases with the decisions the rules must give, run by ``agentos policy test``).
Every field is typed; a file that does not validate is refused with the field that is wrong,
and the service then denies everything ("no policy loaded") rather than guess.
"""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from agentos_schemas.rpc import ActionKind, Decision
from agentos_schemas.rpc.policy import ToolClassification
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

Classification = Literal["public", "internal", "confidential", "personal"]
CLASS_RANK: dict[str, int] = {"public": 0, "internal": 1, "confidential": 2, "personal": 3}
Risk = Literal["low", "medium", "high"]
RISKS: tuple[Risk, ...] = ("low", "medium", "high")


class PolicyError(ValueError):
    """A policy folder is missing or malformed; the message names the file and field."""


class _Rule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


@functools.lru_cache(maxsize=4096)
def _glob(pattern: str) -> Callable[[str], Any] | None:
    if not any(c in pattern for c in "*?["):
        return None
    return re.compile(fnmatch.translate(pattern)).match


def matches(pattern: str, value: str) -> bool:
    """Glob match (``*``, ``?``, ``[…]``) used by every pattern in a policy."""
    if pattern == "*" or pattern == value:
        return True
    match = _glob(pattern)
    return match is not None and match(value) is not None


def any_match(patterns: tuple[str, ...], value: str) -> bool:
    """Whether any of ``patterns`` matches ``value``."""
    return any(matches(p, value) for p in patterns)


class AgentRule(_Rule):
    """What one agent (or, under ``"*"``, any agent not named) may do."""

    team: str = "default"
    roles: tuple[str, ...] = ()
    """Agent roles whose grants are added to this agent's own."""
    tenants: tuple[str, ...] = ("*",)
    """Tenants the agent may work for."""
    clearance: Classification = "internal"
    """Highest data classification the agent may touch."""
    tools: tuple[str, ...] = ()
    """Tool allowlist (globs). Anything else is denied whatever the model asks."""
    models: tuple[str, ...] = ("*",)
    """Model aliases or strings (globs) the agent may call."""
    read: tuple[str, ...] = ()
    """Read scopes: ``connector:resource`` globs."""
    write: tuple[str, ...] = ()
    """Write scopes: ``connector:resource`` globs."""


class AgentRole(_Rule):
    """Tools and scopes granted to every agent that has the role."""

    tools: tuple[str, ...] = ()
    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()


class ToolRule(_Rule):
    """How a tool touches the world: the resource, read or write, its risk and its data."""

    resource: str = ""
    """``connector:resource`` (default ``tool:<name>``)."""
    access: Literal["read", "write"] = "read"
    risk: Risk = "low"
    data_class: Classification = "internal"
    """Classification of the data the tool returns or sends."""
    outside: bool = False
    """Writes to the world outside AgentOS (an outside action)."""
    recipient_arg: str | None = None
    """Argument holding the recipient (an address or URL) of an outbound message."""


class RiskTier(_Rule):
    """What a risk tier requires: approvers, their role, the deadline and what a missed one does."""

    approvals: int = Field(default=0, ge=0, le=5)
    """Distinct humans who must approve (0: allowed at once)."""
    approver_role: str = "approver"
    timeout_s: float = Field(default=300.0, gt=0)
    on_timeout: Literal["deny", "escalate"] = "deny"
    escalate_to: str = "admin"
    """Role that takes over an escalated approval (it is also announced as ``goal.escalated``)."""
    escalation_timeout_s: float = Field(default=600.0, gt=0)


class Human(_Rule):
    """A person who may act on AgentOS (approve, take over …) through their roles."""

    roles: tuple[str, ...] = ()


class HumanRole(_Rule):
    """What a human role may act on and which risk tiers it may approve."""

    grants: tuple[str, ...] = ()
    """Resources a human with this role may act on (globs), e.g. ``task:takeover``."""
    approves: tuple[Risk, ...] = ()
    """Risk tiers this role may approve."""


class RateLimit(_Rule):
    """Allowed calls per minute for each agent and resource the patterns match."""

    agent: str = "*"
    action: ActionKind | Literal["*"] = "*"
    resource: str = "*"
    per_minute: int = Field(ge=1)


class BudgetCap(_Rule):
    """A hard spending cap per agent, team or tenant, per day or month."""

    scope: Literal["agent", "team", "tenant"]
    name: str = "*"
    """Agent, team or tenant the cap applies to (glob); each match has its own cap."""
    tenant: str = "*"
    period: Literal["day", "month"]
    usd: float | None = Field(default=None, ge=0)
    tokens: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _some_limit(self) -> BudgetCap:
        if self.usd is None and self.tokens is None:
            raise ValueError("a budget cap needs usd or tokens")
        return self


class EarlierMatch(_Rule):
    """What an earlier allowed call of the same goal must have touched."""

    data_class: Classification | None = None
    tool: str | None = None


class NowMatch(_Rule):
    """What the current call must be for a sequence rule to fire."""

    action: ActionKind | None = None
    tool: str | None = None
    external_recipient: bool | None = None


class SequenceRule(_Rule):
    """When an earlier allowed call in the same goal matches ``earlier`` and this one ``now``."""

    name: str
    earlier: EarlierMatch
    now: NowMatch
    decision: Literal["deny", "require_approval"] = "require_approval"
    risk: Risk = "medium"
    escalate: bool = False
    """Also announce ``goal.escalated`` when the rule fires."""
    reason: str = ""


class TaintRule(_Rule):
    """Defence against prompt injection through tools: once a task has read untrusted content (a
    tool classified ``untrusted``, or one of ``sources``), any later outside action in it needs
    approval (or is denied)."""

    enabled: bool = True
    sources: tuple[str, ...] = ()
    """Tools (globs) whose output taints the goal, besides those their connector classifies untrusted."""
    decision: Literal["deny", "require_approval"] = "require_approval"
    risk: Risk = "medium"
    """The tier whose approvers decide (at least this; a riskier tool keeps its own)."""
    reason: str = "the task read untrusted content (a tool result may carry injected instructions)"


class Loops(_Rule):
    """Runaway limits: repeated identical calls, re-plans, spend per minute."""

    same_call_per_task: int = Field(default=4, ge=1)
    """Identical tool call (same tool, same arguments) allowed this often in one task."""
    same_call_per_goal: int = Field(default=10, ge=1)
    replans_per_goal: int = Field(default=8, ge=1)
    """More re-plans than this is a replan storm: the goal's further requests are denied."""
    spend_usd_per_minute: float | None = Field(default=None, gt=0)
    """Spend spike: more model spend (reserved) per tenant in one minute is denied."""


class Escalation(_Rule):
    """When a finished task escalates its goal to a human."""

    low_confidence_below: float | None = Field(default=None, ge=0, le=1)
    """Escalate a goal when a task's output has a ``confidence`` below this."""
    to: str = "operator"


class Policy(_Rule):
    """One policy version."""

    version: str = Field(min_length=1)
    description: str = ""
    agents: dict[str, AgentRule] = Field(default_factory=dict)
    roles: dict[str, AgentRole] = Field(default_factory=dict)
    tools: dict[str, ToolRule] = Field(default_factory=dict)
    humans: dict[str, Human] = Field(default_factory=dict)
    human_roles: dict[str, HumanRole] = Field(default_factory=dict)
    risk: dict[Risk, RiskTier] = Field(default_factory=lambda: {"low": RiskTier()})
    rate_limits: tuple[RateLimit, ...] = ()
    budgets: tuple[BudgetCap, ...] = ()
    sequences: tuple[SequenceRule, ...] = ()
    taint: TaintRule = Field(default_factory=TaintRule)
    loops: Loops = Field(default_factory=Loops)
    escalation: Escalation = Field(default_factory=Escalation)
    model_risk: dict[str, Risk] = Field(default_factory=dict)
    """Risk tier of model calls by model glob (unlisted models are low risk)."""
    internal_domains: tuple[str, ...] = ()
    """Recipient domains that count as inside (globs); every other address is external."""

    def agent(self, name: str) -> AgentRule | None:
        """The rule for agent ``name`` (or the ``"*"`` rule; None if neither exists)."""
        return self.agents.get(name) or self.agents.get("*")

    def tool(self, name: str, classification: ToolClassification | None = None) -> ToolRule:
        """The rule for tool ``name``, with its resource filled in (default ``tool:<name>``): the
        policy's own ``tools:`` entry, else the connector's ``classification`` of it."""
        rule = self.tools.get(name)
        if rule is None and classification is not None:
            rule = classified(classification)
        rule = rule or ToolRule()
        return rule if rule.resource else rule.model_copy(update={"resource": f"tool:{name}"})

    def model_tier(self, chain: list[str]) -> Risk:
        """The highest risk of any model in a fallback chain."""
        risks: list[Risk] = [r for pattern, r in self.model_risk.items() for m in chain if matches(pattern, m)]
        return max(risks, key=RISKS.index) if risks else "low"

    def tier(self, risk: str) -> RiskTier:
        """The risk tier named ``risk`` (an empty tier, no approvals, if undefined)."""
        found = self.risk.get(risk) if risk in RISKS else None  # `in` narrows risk to a Risk
        return found or RiskTier()


def classified(c: ToolClassification) -> ToolRule:
    """The tool rule a connector's classification amounts to (its highest data class counts)."""
    data_class = max(c.data_classes or ("internal",), key=CLASS_RANK.__getitem__)
    return ToolRule(
        access="read" if c.access == "read" else "write",
        risk=c.risk,
        data_class=data_class,
        outside=c.access == "write",
    )


class Case(_Rule):
    """One shipped test: a request (after optional earlier ones in the same goal) and what it must get."""

    name: str
    request: dict[str, Any]
    history: tuple[dict[str, Any], ...] = ()
    expect: Decision
    code: str | None = None


class Suite(_Rule):
    """The cases of a policy's tests.yaml."""

    cases: tuple[Case, ...] = ()


def default_policy_dir() -> Path:
    """The policy folder shipped with AgentOS."""
    return Path(str(resources.files("agentos_policy") / "policies" / "default"))


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read: {exc}") from None
    except yaml.YAMLError as exc:
        raise PolicyError(f"{path}: not valid YAML: {exc}") from None


_R = TypeVar("_R", bound=_Rule)


def _validate(cls: type[_R], data: Any, path: Path) -> _R:
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "<root>"
        raise PolicyError(f"{path}: {where}: {first['msg']}") from None


def load_policy(folder: Path) -> Policy:
    """The policy in ``folder``/policy.yaml."""
    path = folder / "policy.yaml"
    if not path.is_file():
        raise PolicyError(f"{folder}: no policy.yaml")
    return _validate(Policy, _read_yaml(path), path)


def load_suite(folder: Path) -> Suite:
    """The test cases shipped next to the policy (empty when there is no tests.yaml)."""
    path = folder / "tests.yaml"
    if not path.is_file():
        return Suite()
    return _validate(Suite, _read_yaml(path), path)


def fingerprint(folder: Path) -> tuple[float, ...]:
    """Modification times of the policy files, to notice an edit and reload."""
    return tuple(p.stat().st_mtime for p in sorted(folder.glob("*.yaml")))
