"""The decision function: a pure function of (policy, request, remembered state, time).

Order of the checks: who is asking (agent known, tenant allowed, or a human's role grants);
runaway guards (replan storm, repeated identical calls, spend spike); what is asked (model
allowlist, tool allowlist, read/write scope, data clearance); rate limits; sequence rules; risk
tier. The first deny wins; a sequence rule or a risk tier may ask for approval instead. Budgets
are not here: they need the ledger, which the service consults after an allow.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlparse

from agentos_schemas.events.policy import AlertKind
from agentos_schemas.rpc import Decision, DecisionCode, PolicyRequest

from agentos_policy.model import CLASS_RANK, AgentRule, Policy, SequenceRule, ToolRule, any_match, matches
from agentos_policy.state import GoalMemory, State, call_key

RISKS = ("low", "medium", "high")


@dataclass(frozen=True)
class Verdict:
    """The engine's answer before approvals and budgets are consulted."""

    decision: Decision
    code: DecisionCode = "ok"
    reasons: tuple[str, ...] = ()
    risk: str | None = None
    data_class: str | None = None
    """Classification of the data the call touches (kept for sequence rules)."""
    alert: AlertKind | None = None
    escalate: bool = False


def deny(code: DecisionCode, reason: str, alert: AlertKind | None = None) -> Verdict:
    """A deny verdict with one reason (and the alert it raises, if any)."""
    return Verdict("deny", code, (reason,), alert=alert)


@dataclass(frozen=True)
class Grants:
    """An agent's tools and scopes, its roles' included."""

    tools: tuple[str, ...]
    read: tuple[str, ...]
    write: tuple[str, ...]


def grants(policy: Policy, agent: AgentRule) -> Grants:
    """The agent's own grants plus those of its roles."""
    tools, read, write = list(agent.tools), list(agent.read), list(agent.write)
    for name in agent.roles:
        role = policy.roles.get(name)
        if role is not None:
            tools += role.tools
            read += role.read
            write += role.write
    return Grants(tuple(tools), tuple(read), tuple(write))


def agent_name(request: PolicyRequest) -> str:
    """The agent a request is about: ``agent``, else the name in ``principal``."""
    return request.agent or request.principal.removeprefix("agent:")


def evaluate(policy: Policy, request: PolicyRequest, state: State, now: float) -> Verdict:
    """The decision for ``request`` (before budgets and approvals already given)."""
    if request.principal.startswith("user:"):
        return _human(policy, request)
    name = agent_name(request)
    agent = policy.agent(name)
    if agent is None:
        return deny("not_allowed", f"agent {name!r} is not in policy {policy.version}")
    if not any_match(agent.tenants, request.tenant):
        return deny("not_allowed", f"agent {name!r} may not work for tenant {request.tenant!r}")
    memory = state.goal(request.tenant, request.goal_id)
    runaway = _runaway(policy, request, state, memory, now)
    if runaway is not None:
        return runaway
    access = _access(policy, agent, name, request)
    if isinstance(access, Verdict):
        return access
    tool_rule = access
    limited = _rate(policy, request, name, state, now)
    if limited is not None:
        return limited
    data_class = tool_rule.data_class if tool_rule else None
    risk = tool_rule.risk if tool_rule else _model_risk(policy, request)
    held = _sequences(policy, request, memory, tool_rule, risk)
    if held is not None:
        return held
    if policy.tier(risk).approvals > 0:
        needed = policy.tier(risk).approvals
        return Verdict(
            "require_approval", "risk", (f"{risk} risk: {needed} approver(s) needed",), risk=risk, data_class=data_class
        )
    return Verdict("allow", "ok", (f"allowed by policy {policy.version}",), risk=risk, data_class=data_class)


def _sequences(
    policy: Policy, request: PolicyRequest, memory: GoalMemory | None, tool_rule: ToolRule | None, risk: str
) -> Verdict | None:
    """What the goal did before decides: the sequence rules, then the taint rule."""
    data_class = tool_rule.data_class if tool_rule else None
    for rule in policy.sequences:
        if memory is not None and _sequence_fires(policy, rule, request, memory, tool_rule):
            reason = rule.reason or f"sequence rule {rule.name!r}"
            return Verdict(
                rule.decision,
                "sequence",
                (reason,),
                risk=max(rule.risk, risk, key=RISKS.index),
                data_class=data_class,
                escalate=rule.escalate,
            )
    tainted = _taint(policy, request, memory, tool_rule)
    if tainted is not None:
        risk = max(policy.taint.risk, risk, key=RISKS.index)
        return Verdict(policy.taint.decision, "taint", (tainted,), risk=risk, data_class=data_class)
    return None


def _taint(policy: Policy, request: PolicyRequest, memory: GoalMemory | None, tool_rule: ToolRule | None) -> str | None:
    """The taint rule's reason when it holds an outside action of a task that read untrusted content."""
    rule = policy.taint
    outside = request.action == "outside_action" or (tool_rule is not None and tool_rule.outside)
    if not rule.enabled or not outside:
        return None
    sources = set(request.tainted_by)
    if memory is not None and rule.sources:
        sources |= {t for t in memory.tools if any_match(rule.sources, t)}
    if not sources:
        return None
    return f"{rule.reason}: read {', '.join(sorted(sources))} before {request.tool or request.resource!r}"


def _model_risk(policy: Policy, request: PolicyRequest) -> str:
    if request.action != "model_call":
        return "low"
    return policy.model_tier([request.resource, *str(request.args.get("fallbacks") or "").split(",")])


def _human(policy: Policy, request: PolicyRequest) -> Verdict:
    user = request.principal.removeprefix("user:")
    human = policy.humans.get(user)
    if human is None:
        return deny("not_allowed", f"user {user!r} is not in policy {policy.version}")
    for role in human.roles:
        spec = policy.human_roles.get(role)
        if spec is not None and any_match(spec.grants, request.resource):
            return Verdict("allow", "ok", (f"{user} acts as {role}",))
    return deny("not_allowed", f"no role of {user!r} ({', '.join(human.roles) or 'none'}) grants {request.resource!r}")


def _runaway(
    policy: Policy, request: PolicyRequest, state: State, memory: GoalMemory | None, now: float
) -> Verdict | None:
    loops = policy.loops
    if memory is not None and memory.replans > loops.replans_per_goal:
        return deny(
            "loop",
            f"replan storm: goal re-planned {memory.replans} times (limit {loops.replans_per_goal})",
            "replan_storm",
        )
    if memory is not None and request.action != "model_call" and not State.repeat_of(memory, request):
        key = call_key(request)
        what = request.tool or request.resource
        if memory.calls_in_task[(request.task_id, key)] + 1 > loops.same_call_per_task:
            return deny(
                "loop",
                f"loop: identical {what!r} call repeated more than "
                f"{loops.same_call_per_task} times in task {request.task_id}",
                "loop",
            )
        if memory.calls_in_goal[key] + 1 > loops.same_call_per_goal:
            return deny(
                "loop",
                f"loop: identical {what!r} call repeated more than {loops.same_call_per_goal} times in the goal",
                "loop",
            )
    limit = loops.spend_usd_per_minute
    if request.action == "model_call" and limit is not None:
        spent = state.spend_per_minute(request.tenant, now)
        if spent + request.estimated_cost_usd > limit:
            return deny(
                "spend_spike",
                f"spend spike: ${spent:.4f} in the last minute for tenant {request.tenant!r} (limit ${limit:.4f}/min)",
                "spend_spike",
            )
    return None


def _access(policy: Policy, agent: AgentRule, name: str, request: PolicyRequest) -> Verdict | ToolRule | None:
    """A deny, or the tool rule that applies (None for model calls and tool-less actions)."""
    if request.action == "model_call":
        chain = [request.resource, *str(request.args.get("fallbacks") or "").split(",")]
        for model in filter(None, (m.strip() for m in chain)):
            if not any_match(agent.models, model):
                return deny("model", f"model {model!r} is not allowed for agent {name!r}")
        return None
    granted = grants(policy, agent)
    rule: ToolRule | None = None
    if request.tool is not None:
        if not any_match(granted.tools, request.tool):
            return deny(
                "not_allowed",
                f"tool {request.tool!r} is not on the allowlist of agent {name!r} "
                f"(allowed: {', '.join(granted.tools) or 'none'})",
            )
        rule = policy.tool(request.tool, request.classification)
        if request.tool not in policy.tools and request.resource:
            rule = rule.model_copy(update={"resource": request.resource})
    resource = rule.resource if rule else request.resource
    write = request.action in ("memory_write", "outside_action") or (rule is not None and rule.access == "write")
    scopes = granted.write if write else granted.read + granted.write
    if not any_match(scopes, resource):
        return deny("scope", f"agent {name!r} has no {'write' if write else 'read'} scope on {resource!r}")
    if rule is not None and CLASS_RANK[rule.data_class] > CLASS_RANK[agent.clearance]:
        return deny(
            "scope",
            f"{request.tool!r} handles {rule.data_class} data, above the clearance "
            f"({agent.clearance}) of agent {name!r}",
        )
    return rule


def _rate(policy: Policy, request: PolicyRequest, name: str, state: State, now: float) -> Verdict | None:
    resource = request.tool or request.resource
    for limit in policy.rate_limits:
        if not (
            matches(limit.agent, name) and matches(limit.action, request.action) and matches(limit.resource, resource)
        ):
            continue
        used = state.rate(request.tenant, name, request.action, request.resource, now)
        if used >= limit.per_minute:
            return deny(
                "rate_limit",
                f"rate limit: {used} {request.action} on {resource!r} by {name!r} "
                f"in the last minute (limit {limit.per_minute}/min)",
            )
    return None


def _sequence_fires(
    policy: Policy, rule: SequenceRule, request: PolicyRequest, memory: GoalMemory, tool_rule: ToolRule | None
) -> bool:
    earlier = rule.earlier
    if earlier.data_class is not None and earlier.data_class not in memory.data_classes:
        return False
    if earlier.tool is not None and not any(matches(earlier.tool, t) for t in memory.tools):
        return False
    now = rule.now
    outside = request.action == "outside_action" or (tool_rule is not None and tool_rule.outside)
    if now.action is not None and now.action != request.action and not (now.action == "outside_action" and outside):
        return False
    if now.tool is not None and not matches(now.tool, request.tool or ""):
        return False
    if now.external_recipient is not None:
        return external(policy, request, tool_rule) == now.external_recipient
    return True


def external(policy: Policy, request: PolicyRequest, tool_rule: ToolRule | None) -> bool:
    """Whether the call's recipient is outside the organisation (unknown counts as outside)."""
    arg = (tool_rule.recipient_arg if tool_rule else None) or "to"
    value = str(request.args.get(arg) or "")
    if "://" in value:
        domain = urlparse(value).hostname or ""
    elif "@" in value:
        domain = value.rpartition("@")[2].strip().strip(">").lower()
    else:  # the address was redacted in the log: the caller's derived domain (``to_domain``)
        domain = str(request.args.get(f"{arg}_domain") or "").lower()
    return not (domain and any_match(policy.internal_domains, domain))
