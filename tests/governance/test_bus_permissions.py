"""Least privilege on the bus: each service's NATS user may publish and subscribe only on its own
subjects, and the NATS server itself refuses the rest."""

from __future__ import annotations

import asyncio
import re

import nats.errors
import pytest
from agentos_kernel import Bus, control
from agentos_kernel.bus import PermissionDenied, connect_nats
from agentos_kernel.embedded import SERVICE_PERMISSIONS, authorization_block, load_credentials, nats_config
from agentos_schemas import codec
from agentos_schemas.events import GoalCompleted, TaskStarted
from agentos_schemas.events.policy import PolicyDecided
from agentos_schemas.rpc import PolicyRequest

from tests.governance.conftest import Fleet


async def test_specialist_may_not_state_what_only_others_may(fleet: Fleet) -> None:
    bus = await Bus.connect(fleet.settings_for("specialist"), source="specialist")
    try:
        ack = await bus.publish(
            bus.new(TaskStarted(task_id="t/1", goal_id="g", agent="a", instance="i"), tenant="acme")
        )
        assert ack.stream == "AGENTOS_EVENTS"
        forged = bus.new(GoalCompleted(goal_id="g", result="forged", cost_usd=0.0, tokens=0), tenant="acme")
        with pytest.raises(PermissionDenied, match=re.escape("agentos.acme.goal.completed")):
            await bus.publish(forged)
        decided = bus.new(
            PolicyDecided(
                decision_id="d",
                request=PolicyRequest(tenant="acme", principal="agent:a", action="tool_call", resource="x"),
                decision="allow",
                policy_version="forged",
            ),
            tenant="acme",
        )
        with pytest.raises(PermissionDenied, match=re.escape("policy.decided")):
            await bus.publish(decided)
        kv = await control.open_bucket(bus.nc.jetstream(timeout=1.0), create=False)  # it may read them …
        with pytest.raises(nats.errors.TimeoutError):  # … but not flip one: no PubAck comes back
            await kv.put("halt.all", control.Halt("all", reason="forged").to_bytes())
    finally:
        await bus.close()
    assert "agentos.acme.goal.completed" in bus.denied and "$kv.agentos_control.halt.all" in bus.denied
    assert "halt.all" not in control.state().halts


async def test_the_server_refuses_raw_publishes_and_subscriptions(fleet: Fleet) -> None:
    """Without the kernel in between: no PubAck comes back, and the server reports the violation."""
    errors: list[str] = []
    creds = fleet.nats.credentials["context-manager"]
    nc = await connect_nats(
        fleet.admin.nats_url or "",
        name="raw",
        user="context-manager",
        password=creds["password"],
        inbox_prefix="_INBOX.context-manager",
    )
    nc._error_cb = _collect(errors)  # type: ignore[attr-defined]
    try:
        body = codec.encode(
            Bus(nc, fleet.admin, "raw").new(
                GoalCompleted(goal_id="g", result="x", cost_usd=0.0, tokens=0), tenant="acme"
            )
        )
        with pytest.raises(nats.errors.TimeoutError):
            await nc.jetstream().publish("agentos.acme.goal.completed", body, timeout=1.0)
        await nc.subscribe("agentos.>")  # snooping on the whole log
        await nc.flush()
        await asyncio.sleep(0.2)
    finally:
        await nc.close()
    assert any('publish to "agentos.acme.goal.completed"' in e for e in errors), errors
    assert any('subscription to "agentos.>"' in e for e in errors), errors


def _collect(errors: list[str]):  # type: ignore[no-untyped-def]
    async def cb(exc: Exception) -> None:
        errors.append(str(exc))

    return cb


def test_every_service_has_a_user_and_only_the_operator_door_may_write_switches(tmp_path) -> None:  # type: ignore[no-untyped-def]
    creds = load_credentials(tmp_path, ["admin", *SERVICE_PERMISSIONS])
    block = authorization_block({u: c["hash"] for u, c in creds.items()})
    assert nats_config(tmp_path / "store", "default", block).count("user:") == len(SERVICE_PERMISSIONS) + 1
    assert oct((tmp_path / "credentials.json").stat().st_mode & 0o777) == "0o600"
    for service in SERVICE_PERMISSIONS:
        from agentos_kernel.embedded import permissions

        allowed = permissions(service)["publish"]["allow"]  # type: ignore[index]
        switches = [s for s in allowed if s.startswith("$KV.AGENTOS_CONTROL")]
        # Only the gateway, the operators' HTTP door (it checks the operator role first), may set
        # and lift switches, and only the halt keys.
        assert switches == (["$KV.AGENTOS_CONTROL.halt.>"] if service == "gateway" else []), service
        assert ">" not in allowed and "$JS.API.>" not in allowed, service
