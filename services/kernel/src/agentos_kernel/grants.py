"""What each service does on the bus, declared once (:data:`SERVICE_USES`), and the NATS
permissions derived from it (:data:`SERVICE_PERMISSIONS`, :func:`permissions`).

Each capability a service declares (state these events, run this durable consumer, read the log,
read or write a bucket, ask or answer a request subject) expands into exactly the subjects the
kernel's code path for it touches, in one helper per capability below. Every service consumes
events, so every service may read claim-checked payloads; every service that states events may
also store them. ``tests/governance/test_service_grants.py`` runs every service's real code under
its own user, claim-checked payloads included, and fails on any permissions violation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

EV, DLQ = "AGENTOS_EVENTS", "AGENTOS_DLQ"
ADMIN = "admin"
OBJ = "OBJ_AGENTOS_PAYLOADS"


def _durable(name: str, stream: str = EV) -> list[str]:
    """Run one durable pull consumer: create/inspect it, fetch, ack, dead-letter, and claim the
    event ids it handles (its own keys of ``AGENTOS_EVENT_IDS``, see ``agentos_kernel.identity``)."""
    api = "$JS.API.CONSUMER"
    ids = "AGENTOS_EVENT_IDS"
    return [
        f"{api}.DURABLE.CREATE.{stream}.{name}",
        f"{api}.CREATE.{stream}.{name}",
        f"{api}.INFO.{stream}.{name}",
        f"{api}.MSG.NEXT.{stream}.{name}",
        f"$JS.ACK.{stream}.{name}.>",
        f"dlq.agentos.{name}",
        f"$KV.{ids}.{name}.>",
        f"$JS.API.DIRECT.GET.KV_{ids}.$KV.{ids}.{name}.>",
        f"$JS.API.STREAM.INFO.KV_{ids}",
    ]


def _watch(stream: str) -> list[str]:
    """Ephemeral push (ordered) consumers on a stream: KV watches, object reads, log tails."""
    return [f"$JS.API.CONSUMER.CREATE.{stream}", f"$JS.API.CONSUMER.INFO.{stream}.*", f"$JS.FC.{stream}.>"]


def _kv(bucket: str, write: str | None = ">", create: bool = False) -> list[str]:
    """Read a bucket (get, watch), write keys under ``write``, create the bucket if ``create``."""
    stream = f"KV_{bucket}"
    found = [
        f"$JS.API.STREAM.INFO.{stream}",
        f"$JS.API.DIRECT.GET.{stream}",
        f"$JS.API.DIRECT.GET.{stream}.>",
        f"$JS.API.STREAM.MSG.GET.{stream}",
        *_watch(stream),
    ]
    if write:
        found.append(f"$KV.{bucket}.{write}")
    if create:
        found.append(f"$JS.API.STREAM.CREATE.{stream}")
    return found


def _claim_check_read() -> list[str]:
    """Fetch a claim-checked payload (:meth:`agentos_kernel.Bus.payload`): the object's info, then
    its chunks through an ordered consumer. nats-py's object store subscribes to the chunk subject
    without naming the stream, so it first asks which stream holds that subject (STREAM.NAMES)."""
    return [
        "$JS.API.STREAM.NAMES",
        f"$JS.API.STREAM.INFO.{OBJ}",
        f"$JS.API.STREAM.MSG.GET.{OBJ}",
        f"$JS.API.DIRECT.GET.{OBJ}.>",
        *_watch(OBJ),
    ]


def _claim_check_write() -> list[str]:
    """Store a payload over the claim-check size before publishing the event that names it."""
    return ["$O.AGENTOS_PAYLOADS.C.>", "$O.AGENTOS_PAYLOADS.M.>"]


# Reading the log through ephemeral pull consumers (replay, audit reads) needs consumers of any
# name: JetStream's API subjects name the consumer, not the reader, so read access to a stream
# is all-or-nothing. Services that never replay do not get it.
LOG_READER = [
    "$JS.API.CONSUMER.CREATE.AGENTOS_EVENTS.*",
    "$JS.API.CONSUMER.CREATE.AGENTOS_EVENTS.*.>",
    "$JS.API.CONSUMER.MSG.NEXT.AGENTOS_EVENTS.*",
    "$JS.API.CONSUMER.INFO.AGENTOS_EVENTS.*",
    "$JS.API.STREAM.MSG.GET.AGENTOS_EVENTS",
    *_watch(EV),
]

# Any service may CREATE the shared streams and buckets if they are missing (a fresh deployment
# bootstraps itself, ``AGENTOS_PROVISION=create``); creating one that exists with another config
# fails, and only the admin may UPDATE them.
SHARED = (
    EV,
    DLQ,
    "KV_AGENTOS_HEALTH",
    "KV_AGENTOS_CONTROL",
    "KV_AGENTOS_RECORDS",
    OBJ,
    "KV_AGENTOS_SUBJECT_KEYS",
    "KV_AGENTOS_EVENT_IDS",
    "KV_AGENTOS_LEASES",
)


def _common(service: str) -> list[str]:
    """What every service does: stream info, its health record, the kill switches (read only),
    data subjects' keys (read only), claim-checked payloads (read), bootstrapping missing shared
    streams."""
    return [
        "$JS.API.INFO",
        f"$JS.API.STREAM.INFO.{EV}",
        f"$JS.API.STREAM.INFO.{DLQ}",
        *(f"$JS.API.STREAM.CREATE.{x}" for x in SHARED),
        "$JS.API.STREAM.INFO.KV_AGENTOS_RECORDS",
        *_kv("AGENTOS_HEALTH", f"{service}.>"),
        *_kv("AGENTOS_CONTROL", None),
        *_kv("AGENTOS_SUBJECT_KEYS", None),  # read data subjects' keys (agentos_kernel.shred)
        *_claim_check_read(),
    ]


def _events(*names: str) -> list[str]:
    return [f"agentos.*.{n}" for n in names]


@dataclass(frozen=True)
class Uses:
    """What one service does on the bus."""

    states: tuple[str, ...] = ()
    """The events it publishes (``<domain>.<event>``; any tenant)."""
    durables: tuple[str, ...] = ()
    """Its durable consumers on ``AGENTOS_EVENTS`` (fetch, ack, dead-letter)."""
    reads_log: bool = False
    """It replays or reads the log through ephemeral consumers (:data:`LOG_READER`)."""
    buckets: tuple[tuple[str, str | None, bool], ...] = ()
    """KV buckets beyond the shared ones: (bucket, keys it writes or None, may create it)."""
    asks: tuple[str, ...] = ()
    """Request subjects it sends requests to."""
    answers: tuple[str, ...] = ()
    """Request subjects it serves (subscribes to, and replies on)."""
    raw: tuple[str, ...] = ()
    """Other publish subjects, each with its reason where declared."""

    def publish(self) -> list[str]:
        found = [*_events(*self.states), *(x for d in self.durables for x in _durable(d)), *self.asks, *self.raw]
        if self.reads_log:
            found += LOG_READER
        for bucket, write, create in self.buckets:
            found += _kv(bucket, write, create)
        if self.states or any(x.startswith("agentos.") for x in self.raw):  # events it states may be claim-checked
            found += _claim_check_write()
        return found


_POLICY_CALLS = ("agentosrpc.policy.decide", "agentosrpc.policy.approval")
#: Service -> what it does on the bus: the one declared table every NATS user is derived from.
SERVICE_USES: dict[str, Uses] = {
    "orchestrator": Uses(
        states=(
            "goal.planned",
            "goal.completed",
            "goal.failed",
            "goal.escalated",
            "goal.held",
            "workflow.declared",
            "task.assigned",
            "task.reviewed",
            "budget.settlement_requested",
        ),
        reads_log=True,
        asks=_POLICY_CALLS,  # the planner's model calls
        buckets=(("AGENTOS_LEASES", "orchestrator.>", False),),  # goal ownership (agentos_kernel.ownership)
        raw=("$JS.API.CONSUMER.DELETE.AGENTOS_EVENTS.orchestrator",),
    ),  # the durable it no longer uses
    "context-manager": Uses(
        states=("context.ready",), durables=("context-manager",), reads_log=True, asks=("agentosrpc.memory.search",)
    ),
    "specialist": Uses(
        states=(
            "task.started",
            "task.completed",
            "task.failed",
            "agent.announced",
            "agent.retired",
            "memory.proposed",
            "action.executed",
            "budget.settlement_requested",
            "connector.announced",
            "connector.degraded",
            "tool.result_stored",
        ),
        durables=("specialist",),
        buckets=(
            ("AGENTOS_CONTEXTS", ">", True),
            ("AGENTOS_RECORDS", ">", False),
            ("AGENTOS_CONNECTORS", ">", True),
        ),
        asks=_POLICY_CALLS,
    ),
    "memory": Uses(states=("memory.committed",), durables=("memory",), answers=("agentosrpc.memory.search",)),
    "policy": Uses(
        states=(
            "policy.decided",
            "approval.requested",
            "approval.voted",
            "approval.decided",
            "budget.settled",
            "alert.raised",
            "goal.escalated",
        ),
        durables=("policy",),
        reads_log=True,
        answers=("agentosrpc.policy.>",),
    ),
    "audit": Uses(
        states=("audit.checkpoint",),  # its signed tree checkpoints, into the log itself
        durables=("audit",),
        reads_log=True,
        answers=("agentosrpc.audit.>",),
        raw=("$JS.API.CONSUMER.DELETE.AGENTOS_EVENTS.audit",),
    ),  # recreates its durable at the head
    # The ingress: it maps outside payloads to any catalogue event, but never to the facts that
    # only the runtime may state.
    "gateway": Uses(
        durables=("gateway-kpi",),
        reads_log=True,
        buckets=tuple((f"AGENTOS_GATEWAY_{b}", ">", True) for b in ("WEBHOOKS", "IDEMPOTENCY", "GOALS", "SCHEDULES")),
        asks=(
            "agentosrpc.policy.approval",
            "agentosrpc.policy.approvals",
            "agentosrpc.policy.vote",
            "agentosrpc.policy.budget",
            "agentosrpc.policy.decide",
            "agentosrpc.audit.query",
            "agentosrpc.audit.trace",
        ),  # operator and analyst endpoints
        raw=(
            "agentos.>",
            "ingress.raw.>",  # foreign-type CloudEvents, kept verbatim
            "dlq.agentos.gateway",
            "$KV.AGENTOS_SUBJECT_KEYS.>",  # creates data subjects' keys for the personal fields it maps
            "$KV.AGENTOS_CONTROL.halt.>",
        ),
    ),  # operators' kill switches
}

#: Service -> (publish, subscribe beyond its inbox, allow replies to requests it serves), derived
#: from :data:`SERVICE_USES`.
SERVICE_PERMISSIONS: dict[str, tuple[list[str], list[str], bool]] = {
    name: (uses.publish(), list(uses.answers), bool(uses.answers)) for name, uses in SERVICE_USES.items()
}
#: Facts only the runtime may state: the gateway's ingress refuses them all.
GATEWAY_RESERVED = _events(
    "goal.planned",
    "goal.completed",
    "goal.failed",
    "goal.held",
    "workflow.declared",
    "task.assigned",
    "task.completed",
    "task.failed",
    "task.reviewed",
    "context.ready",
    "memory.committed",
    "policy.decided",
    "approval.decided",
    "budget.settled",
    "audit.checkpoint",
)
#: What NATS refuses the gateway's user: all of them but ``task.completed``, which a human's
#: take-over (``POST /tasks/{id}/takeover``, decided by the policy first) publishes.
GATEWAY_DENY = [s for s in GATEWAY_RESERVED if s != "agentos.*.task.completed"]


def permissions(service: str) -> dict[str, object]:
    """The NATS ``permissions`` map of one service's user."""
    publish, subscribe, responses = SERVICE_PERMISSIONS[service]
    allow_pub = sorted({*publish, *_common(service)})
    perms: dict[str, object] = {
        "publish": {"allow": allow_pub, **({"deny": GATEWAY_DENY} if service == "gateway" else {})},
        "subscribe": {"allow": [f"_INBOX.{service}.>", *subscribe]},
    }
    if responses:
        perms["allow_responses"] = True
    return perms


def authorization_block(hashes: dict[str, str]) -> str:
    """The server's ``authorization`` block: ``admin`` may do anything, each service its own subjects."""
    users: list[str] = []
    for user, hashed in sorted(hashes.items()):
        perms: object = {"publish": ">", "subscribe": ">"} if user == ADMIN else permissions(user)
        users.append(
            f"    {{user: {json.dumps(user)}, password: {json.dumps(hashed)}, permissions: {json.dumps(perms)}}}"
        )
    return "authorization {\n  users = [\n" + "\n".join(users) + "\n  ]\n}\n"


__all__ = [
    "ADMIN",
    "GATEWAY_DENY",
    "GATEWAY_RESERVED",
    "LOG_READER",
    "SERVICE_PERMISSIONS",
    "SERVICE_USES",
    "Uses",
    "authorization_block",
    "permissions",
]
