"""An agent's claims about its writes are attested against the record, not trusted.

A mail agent always answers ``{"sent": true}`` and a memory-keeper always ``{"stored": 3}``,
whatever really happened. The goal must complete only when the record (the effects on
``task.completed``, built from the policy decision and ``action.executed`` / ``memory.proposed``)
bears the claim out; otherwise the step is rejected by attestation (no model asked) and the goal
ends saying what happened: an approver's rejection, a policy denial, an approval's timeout, a
failed tool, a write that never ran, memory writes refused by the rate limit. A specialist that
dies while its mail waits for approval (before it ran) is replaced; the resumed task sends it
once and the claim is attested (the specialist runs as its own process there, killed with SIGKILL).

Runs policy, orchestrator, context-manager, specialist and memory in-process on an embedded
NATS of this module's own, the session's Postgres and the offline model."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from agentos_kernel import Bus, KernelSettings
from agentos_kernel.embedded import EmbeddedNats
from agentos_kernel.service import ServiceContext, start_service, stop_service
from agentos_kernel.testing import eventually, unique
from agentos_policy.model import default_policy_dir
from agentos_policy.simulate import read_log
from agentos_schemas import EventData, new_event_id
from agentos_schemas.events import GoalCompleted, GoalFailed, GoalSubmitted, Limits, TaskReviewed
from agentos_schemas.events.policy import ActionExecuted, PolicyDecided
from agentos_schemas.rpc import (
    POLICY_APPROVALS,
    POLICY_VOTE,
    ApprovalList,
    ApprovalListReply,
    ApprovalReply,
    ApprovalVote,
)
from agentos_schemas.subjects import parse_type
from agentos_specialist.service import default_charters_dir

from tests.policy.test_enforcement import vote_when_pending

MAILER = """---
name: {name}
capabilities: [{name}]
model: fast
tools: [search_documents, send_email]
claims: {{sent: send_email}}
max_tool_rounds: 3
capacity: 4
memory: {{kinds: [], k: 0}}
output_schema:
  type: object
  required: [sent, summary]
  properties: {{sent: {{type: boolean}}, summary: {{type: string}}}}
---
Look the facts up, then e-mail them.
"""
MAIL = {"subject": "Pricing", "body": "Our prices are on the website."}


def mailer_rules(agent: str) -> list[dict[str, Any]]:
    """The mail agent: looks up, sends (unless told it never does), then always claims it sent."""
    return [
        {
            "name": f"{agent}-claims-without-sending",
            "match": {"agent": agent, "any_user_contains": "NEVER-SENDS"},
            "respond": {"json": {"sent": True, "summary": "mailed"}},
        },
        {
            "name": f"{agent}-looks-up",
            "match": {"agent": agent, "turn": 1},
            "respond": {"tool_calls": [{"name": "search_documents", "arguments": {"query": "pricing"}}]},
        },
        {
            "name": f"{agent}-external",
            "match": {"agent": agent, "turn": 2, "any_user_contains": "EXTERNAL"},
            "respond": {"tool_calls": [{"name": "send_email", "arguments": {"to": "jo@elsewhere.net", **MAIL}}]},
        },
        {
            "name": f"{agent}-internal",
            "match": {"agent": agent, "turn": 2},
            "respond": {"tool_calls": [{"name": "send_email", "arguments": {"to": "ops@example.com", **MAIL}}]},
        },
        {
            "name": f"{agent}-claims",
            "match": {"agent": agent},
            "respond": {"json": {"sent": True, "summary": "mailed"}},
        },
    ]


SCENARIO = {
    "models": ["offline-fast", "offline-smart"],
    "rules": [
        *mailer_rules("mailer"),
        *mailer_rules("mailer-unlisted"),
        {
            "name": "keeper-proposes",
            "match": {"agent": "memory-keeper", "has_tool_result": False},
            "respond": {
                "tool_calls": [
                    {"name": "propose_memory", "arguments": {"content": f"Finding number {n} about the market."}}
                    for n in (1, 2, 3)
                ]
            },
        },
        {
            "name": "keeper-claims",
            "match": {"agent": "memory-keeper"},
            "respond": {"json": {"stored": 3, "notes": "three findings proposed"}},
        },
        {
            "name": "qa-accepts",
            "match": {"agent": "qa"},
            "respond": {"json": {"verdict": "accepted", "feedback": "ok"}},
        },
    ],
}
WORKFLOWS = {
    "mail": [{"step_id": "send", "capability": "mailer", "instruction": "E-mail our prices.", "review": False}],
    "mail-unlisted": [
        {"step_id": "send", "capability": "mailer-unlisted", "instruction": "E-mail our prices.", "review": False}
    ],
    "remember": [{"step_id": "store", "capability": "memory", "instruction": "Store the findings.", "review": True}],
}


SERVICES: list[ServiceContext] = []
"""The module's running services (the crash test replaces the specialist)."""
OUTBOX: list[Path] = []


def write_policy(folder: Path) -> None:
    """The shipped policy; the mailer may send (an external recipient after a lookup needs an
    approval), and memory writes are limited to 2 a minute."""
    shutil.copytree(default_policy_dir(), folder)
    policy = yaml.safe_load((folder / "policy.yaml").read_text())
    policy["version"] = "attestation-test"
    policy["agents"]["mailer"] = {
        "team": "service",
        "tools": ["search_documents", "send_email"],
        "read": ["library:*"],
        "write": ["email:outbound"],
    }
    # Its charter lists send_email, but the policy does not let it send: every send is denied.
    policy["agents"]["mailer-unlisted"] = {"team": "service", "tools": ["search_documents"], "read": ["library:*"]}
    policy["sequences"].append(
        {
            "name": "lookup-then-external-mail",
            "earlier": {"tool": "search_documents"},
            "now": {"tool": "send_email", "external_recipient": True},
            "decision": "require_approval",
            "risk": "medium",
            "reason": "test",
        }
    )
    policy["rate_limits"] = [
        r if r["action"] != "memory_write" else {**r, "per_minute": 2} for r in policy["rate_limits"]
    ]
    (folder / "policy.yaml").write_text(yaml.safe_dump(policy))
    (folder / "tests.yaml").write_text("[]\n")


def write_workflows(folder: Path) -> None:
    folder.mkdir()
    for name, steps in WORKFLOWS.items():
        (folder / f"{name}.yaml").write_text(yaml.safe_dump({"name": name, "steps": steps}))


@pytest.fixture(scope="module")
async def obus(settings: KernelSettings, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Bus]:
    from agentos_context_manager import service as context_manager
    from agentos_memory import service as memory
    from agentos_offline_model import OfflineModelServer, Scenario
    from agentos_orchestrator import service as orchestrator
    from agentos_policy import service as policy
    from agentos_specialist import service as specialist

    root = tmp_path_factory.mktemp("attestation")
    write_policy(root / "policy")
    write_workflows(root / "workflows")
    shutil.copytree(default_charters_dir(), root / "charters")
    for name in ("mailer", "mailer-unlisted"):
        (root / "charters" / f"{name}.md").write_text(MAILER.format(name=name))
    services = SERVICES
    with pytest.MonkeyPatch.context() as mp:
        model = OfflineModelServer(Scenario.model_validate(SCENARIO)).start()
        nats = EmbeddedNats(root / "nats", sync="default")
        url = nats.start()
        for key, value in {
            "AGENTOS_OFFLINE_MODEL_URL": model.url,
            "AGENTOS_ALLOW_LLM_CALLS": "0",
            "AGENTOS_POLICY_DIR": root / "policy",
            "AGENTOS_STATE_DIR": root,
            "AGENTOS_WORKFLOWS_DIR": root / "workflows",
            "AGENTOS_CHARTERS_DIR": root / "charters",
            "AGENTOS_OUTBOX_DIR": root / "outbox",
            "AGENTOS_POLICY_APPROVAL_WAIT_S": "6",
            "AGENTOS_POLICY_APPROVAL_POLL_S": "0.2",
            "AGENTOS_TASK_ACK_WAIT_S": "3",
        }.items():
            mp.setenv(key, str(value))
        own = KernelSettings(nats_url=url, database_url=settings.database_url, state_dir=root, publish_timeout_s=20)
        bus = await Bus.connect(own, source="attestation-test")
        await bus.provision()
        try:
            for name, module, database in [
                ("policy", policy, True),
                ("memory", memory, True),
                ("context-manager", context_manager, False),
                ("specialist", specialist, False),
                ("orchestrator", orchestrator, False),
            ]:
                services.append(await start_service(name, module.setup, own, database=database))
            OUTBOX.append(root / "outbox")
            yield bus
        finally:
            for ctx in reversed(services):
                await stop_service(ctx, timeout=3)
            services.clear()
            await bus.close()
            nats.stop()
            await asyncio.to_thread(model.stop)


async def logged(bus: Bus, tenant: str, cls: type[EventData]) -> list[Any]:
    domain, name, _ = parse_type(cls.ce_type())
    return [e.data async for e in read_log(bus, f"agentos.{tenant}.{domain}.{name}")]


async def submit(bus: Bus, tenant: str, workflow: str, text: str) -> str:
    goal_id = new_event_id()
    data = GoalSubmitted(
        goal_id=goal_id, text=text, workflow=workflow, limits=Limits(max_retries=0, max_replans=0, deadline_s=60)
    )
    await bus.publish(bus.new(data, tenant=tenant, correlationid=goal_id, subject=f"goal/{goal_id}", id=goal_id))
    return goal_id


async def ending(bus: Bus, tenant: str, timeout: float = 90.0) -> GoalCompleted | GoalFailed:
    found: list[Any] = []

    async def ended() -> bool:
        found[:] = [*await logged(bus, tenant, GoalCompleted), *await logged(bus, tenant, GoalFailed)]
        return bool(found)

    await eventually(ended, timeout=timeout, every=0.3)
    assert len(found) == 1, found
    return found[0]


async def test_a_sent_mail_is_attested_and_the_goal_reports_it(obus: Bus) -> None:
    tenant = unique("ok")
    await submit(obus, tenant, "mail", "Tell ops our prices.")
    end = await ending(obus, tenant)
    assert isinstance(end, GoalCompleted), end
    assert end.outputs["send"]["sent"] is True
    (effect,) = end.effects["send"]
    assert (effect.tool, effect.outcome) == ("send_email", "succeeded")
    (executed,) = await logged(obus, tenant, ActionExecuted)
    assert executed.outcome == "succeeded"


async def _unattested(bus: Bus, tenant: str, expect: str) -> GoalFailed:
    end = await ending(bus, tenant)
    assert isinstance(end, GoalFailed), f"the goal completed on a false claim: {end}"
    (verdict,) = [r for r in await logged(bus, tenant, TaskReviewed) if r.step_id == "send"]
    assert verdict.verdict == "rejected" and verdict.reviewer == "attestation"
    assert "sent=true" in verdict.feedback and expect in verdict.feedback, verdict.feedback
    assert expect in end.reason, end.reason
    return end


async def test_a_mail_the_approver_rejected_is_not_reported_sent(obus: Bus) -> None:
    tenant = unique("reject")
    await submit(obus, tenant, "mail", "Tell the EXTERNAL customer our prices.")
    await vote_when_pending(obus, tenant, "alice", "reject", "not to customers")
    await _unattested(obus, tenant, "rejected (rejected: rejected by alice")
    assert not await logged(obus, tenant, ActionExecuted)


async def test_a_mail_the_policy_denied_is_not_reported_sent(obus: Bus) -> None:
    tenant = unique("denied")
    await submit(obus, tenant, "mail-unlisted", "Tell ops our prices.")
    await _unattested(obus, tenant, "denied (not_allowed: tool 'send_email' is not on the allowlist")
    assert not await logged(obus, tenant, ActionExecuted)


async def test_a_mail_whose_tool_failed_is_not_reported_sent(
    obus: Bus, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "not-a-folder").write_text("")
    monkeypatch.setenv("AGENTOS_OUTBOX_DIR", str(tmp_path / "not-a-folder"))
    tenant = unique("broken")
    await submit(obus, tenant, "mail", "Tell ops our prices.")
    await _unattested(obus, tenant, "failed (ERROR: send_email failed")
    (executed,) = await logged(obus, tenant, ActionExecuted)
    assert executed.outcome == "failed"


async def test_a_mail_that_never_ran_is_not_reported_sent(obus: Bus) -> None:
    tenant = unique("never")
    await submit(obus, tenant, "mail", "NEVER-SENDS: tell ops our prices.")
    await _unattested(obus, tenant, "no send_email call is on record")


async def test_a_mail_whose_approval_timed_out_is_not_reported_sent(obus: Bus) -> None:
    tenant = unique("timeout")
    await submit(obus, tenant, "mail", "Tell the EXTERNAL customer our prices.")
    end = await ending(obus, tenant)
    assert isinstance(end, GoalFailed) and "not decided within" in end.reason, end
    assert not await logged(obus, tenant, ActionExecuted)


async def test_memory_writes_refused_by_the_rate_limit_are_not_reported_stored(obus: Bus) -> None:
    tenant = unique("mem")
    await submit(obus, tenant, "remember", "Keep the findings.")
    end = await ending(obus, tenant)
    assert isinstance(end, GoalFailed), f"the goal completed with fewer stored than claimed: {end}"
    (verdict,) = [r for r in await logged(obus, tenant, TaskReviewed) if r.reviewer == "attestation"]
    assert "stored=3" in verdict.feedback and "2 of 3 propose_memory call(s) done" in verdict.feedback
    assert "rate_limit" in verdict.feedback and "rate_limit" in end.reason


async def approve_everything(bus: Bus, tenant: str) -> None:
    """A human who approves every approval of ``tenant`` as it appears."""
    while True:
        reply = await bus.request(POLICY_APPROVALS, ApprovalList(tenant=tenant), ApprovalListReply)
        for info in reply.approvals:
            await bus.request(
                POLICY_VOTE,
                ApprovalVote(approval_id=info.approval_id, user="alice", verdict="approve", reason="fine"),
                ApprovalReply,
            )
        await asyncio.sleep(0.2)


async def test_a_specialist_crash_before_the_mail_ran_sends_it_once_and_attests_it(
    obus: Bus, settings: KernelSettings
) -> None:
    """The specialist runs as its own process (`agentos service specialist`) and is killed with
    SIGKILL while its mail waits for the approval; a new one takes the redelivered task."""
    from agentos_specialist import service as specialist

    old = next(ctx for ctx in SERVICES if ctx.name == "specialist")
    await stop_service(old, timeout=3)
    SERVICES.remove(old)
    env = {**os.environ, "AGENTOS_NATS_URL": old.settings.nats_url or "", "AGENTOS_LOG_LEVEL": "WARNING"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agentos_cli",
        "service",
        "specialist",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        tenant = unique("crash")
        await submit(obus, tenant, "mail", "Tell the EXTERNAL customer our prices.")

        async def waiting() -> bool:  # the task is waiting for the approval: nothing was sent yet
            return any(d.code == "sequence" for d in await logged(obus, tenant, PolicyDecided))

        await eventually(waiting, timeout=60, every=0.2)
        assert proc.returncode is None, "the specialist process took the task"
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGKILL)  # dies before the action ran, acknowledging nothing
        await proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert await logged(obus, tenant, ActionExecuted) == [], "nothing ran before the crash"
    SERVICES.append(await start_service("specialist", specialist.setup, old.settings))
    approving = asyncio.create_task(approve_everything(obus, tenant))
    try:
        end = await ending(obus, tenant, timeout=60)
    finally:
        approving.cancel()
    assert isinstance(end, GoalCompleted), end
    assert [e.outcome for e in end.effects["send"]] == ["succeeded"]
    (executed,) = await logged(obus, tenant, ActionExecuted)
    assert executed.outcome == "succeeded"
    sent = [f for f in OUTBOX[0].glob("*.json") if "jo@elsewhere.net" in f.read_text()]
    assert len(sent) == 1, "sent exactly once"
