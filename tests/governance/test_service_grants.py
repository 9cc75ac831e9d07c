"""Every service runs its real code under its own NATS user — the runtime `agentos up` starts, with
auth on — through a goal whose payload is claim-checked (over 64 KiB): the NATS server refuses
nothing any of them does, and the audit projection reaches the log's end."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from agentos_cli import registry
from agentos_cli.main import wait_for_services
from agentos_cli.supervisor import Runtime
from agentos_kernel import Bus, KernelSettings
from agentos_kernel.grants import SERVICE_USES
from agentos_kernel.testing import eventually, unique
from agentos_schemas import EVENTS_STREAM, new_event_id
from agentos_schemas.events import GoalSubmitted

pytestmark = pytest.mark.connected  # starts servers of its own

BIG = 100_000  # over the claim-check threshold (64 KiB)


@pytest.fixture(scope="module")
async def runtime(servers: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Runtime]:
    state = tmp_path_factory.mktemp("grants")
    schema = unique("grants_")
    env = {"AGENTOS_ALLOW_LLM_CALLS": "0", "AGENTOS_AUDIT_SCHEMA_NAME": schema, "AGENTOS_NATS_AUTH": "1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    rt = Runtime(
        KernelSettings(database_url=servers[1], state_dir=state, nats_sync="default"),
        registry.available(),
        logs=state / "logs",
    )
    try:
        resolved = await rt.start()
        assert rt.nats is not None and rt.nats.credentials, "the embedded server runs with a user per service"
        bus = await Bus.connect(resolved, source="grants-test")
        await wait_for_services(bus, rt.services, timeout=180)  # seven processes starting on a busy machine
        await bus.close()
        yield rt
    finally:
        await rt.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def violations(state: Path) -> list[str]:
    log = (state / "nats" / "nats-server.log").read_text(errors="replace")
    return [line for line in log.splitlines() if "Violation" in line]


async def test_every_service_runs_under_its_own_user_with_claim_checked_payloads(runtime: Runtime) -> None:
    assert set(runtime.services) == set(SERVICE_USES), "every service is declared, and runs here"
    bus = await Bus.connect(runtime.settings, source="grants-test")
    pool = await asyncpg.create_pool(runtime.settings.database_url, min_size=1, max_size=2)
    assert pool is not None
    schema = os.environ["AGENTOS_AUDIT_SCHEMA_NAME"]
    try:
        goal_id = new_event_id()
        submitted = bus.new(
            GoalSubmitted(goal_id=goal_id, text="Summarise the attached notes.", inputs={"notes": "n" * BIG}),
            correlationid=goal_id,
            subject=f"goal/{goal_id}",
            id=goal_id,
        )
        ack = await bus.publish(submitted)
        stored = await bus.js.get_msg(EVENTS_STREAM, ack.seq)
        assert b'"dataref"' in stored.data, "the goal's payload went through the claim check"

        async def projected() -> bool:
            last = (await bus.js.stream_info(EVENTS_STREAM)).state.last_seq
            head = await pool.fetchval(f"SELECT max(seq) FROM {schema}.chain")
            return head is not None and head >= last > ack.seq  # the goal's work was projected too

        await eventually(projected, timeout=60, every=0.5)
        kinds = await pool.fetchval(f"SELECT kind FROM {schema}.chain WHERE seq = $1", ack.seq)
        assert kinds == "event"
    finally:
        await pool.close()
        await bus.close()
    assert violations(runtime.settings.state_dir) == [], "no service was refused anything it does"


async def test_a_refused_claim_check_read_says_what_was_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a grant the read needs, the error names the refused subject instead of a bare timeout."""
    from agentos_kernel import grants
    from agentos_kernel.bus import PermissionDenied
    from agentos_kernel.embedded import EmbeddedNats
    from agentos_schemas import codec
    from agentos_schemas.events import TaskStarted
    from pydantic import SecretStr

    common = grants._common
    monkeypatch.setattr(grants, "_common", lambda s: [x for x in common(s) if x != "$JS.API.STREAM.NAMES"])
    server = EmbeddedNats(tmp_path, sync="default", auth=True)
    admin = KernelSettings(
        nats_url=server.start(),
        state_dir=tmp_path,
        nats_user="admin",
        nats_password=SecretStr(server.credentials["admin"]["password"]),
    )
    try:
        bus = await Bus.connect(admin, source="grants-test")
        await bus.provision()
        ack = await bus.publish(
            bus.new(TaskStarted(task_id="t/1", goal_id="g", agent="a", instance="i" * BIG), tenant="acme")
        )
        stored = await bus.js.get_msg(EVENTS_STREAM, ack.seq)
        audit = await Bus.connect(
            admin.model_copy(
                update={"nats_user": "audit", "nats_password": SecretStr(server.credentials["audit"]["password"])}
            ),
            source="audit",
        )
        try:
            with pytest.raises(PermissionDenied, match=r"NATS refused \$js\.api\.stream\.names"):
                await audit.payload(codec.decode_wire(stored.data, stored.headers, max_bytes=1 << 22))
        finally:
            await audit.close()
            await bus.close()
    finally:
        server.stop()
