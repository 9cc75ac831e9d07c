"""Tampering with the event log itself (not the projection), on a private nats-server. The stream
denies deletes, and NATS refuses to lift that (checked here), so what is left is the store on disk:
someone stops the server and cuts the end off the stream's message file. ``verify`` names the loss:
``deleted`` in the ``stream`` from the first lost sequence, vouched for by a signed checkpoint;
never ``stale``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
import nats.js.errors
import pytest
from agentos_audit.lifecycle import ensure_schema
from agentos_audit.projector import Projector
from agentos_audit.schema import drop_schema
from agentos_audit.signing import load_or_create
from agentos_audit.verify import verify
from agentos_kernel import Bus, KernelSettings
from agentos_kernel.embedded import EmbeddedNats
from agentos_kernel.testing import unique
from agentos_schemas import EVENTS_STREAM
from agentos_schemas.events import GoalSubmitted

from tests.audit.conftest import caught_up

pytestmark = pytest.mark.connected


async def test_a_message_deleted_from_the_stream_is_named(
    pool: asyncpg.Pool, settings: KernelSettings, tmp_path: Path
) -> None:
    server = EmbeddedNats(tmp_path / "nats", sync="default")
    own = KernelSettings(nats_url=server.start(), database_url=settings.database_url, state_dir=tmp_path)
    bus = await Bus.connect(own, source="tamper-test")
    schema = unique("audit_")
    try:
        await bus.provision()
        await ensure_schema(pool, schema)
        signer = load_or_create(tmp_path / "audit-key.pem")
        projector = Projector(
            bus, pool, schema=schema, durable="audit", signer=signer, batch=8, checkpoint_every=8, checkpoint_idle_s=0.2
        )
        await projector.start()
        goals = [GoalSubmitted(goal_id=unique("g"), text=f"goal {n}") for n in range(30)]
        await bus.publish_many([bus.new(g, tenant="acme", subject=f"goal/{g.goal_id}") for g in goals])
        await caught_up(bus, pool, schema)
        await projector.stop()  # signs the head
        report = await verify(bus, pool, schema, signer.public)
        assert report.ok, report.divergences

        info = await bus.js.stream_info(EVENTS_STREAM)
        last = info.state.last_seq
        config = info.config
        config.deny_delete = False
        with pytest.raises(nats.js.errors.ServerError, match="can not cancel deny message deletes"):
            await bus.js.update_stream(config)

        await bus.close()
        server.stop()
        [block] = sorted((tmp_path / "nats").rglob(f"streams/{EVENTS_STREAM}/msgs/*.blk"))
        block.write_bytes(block.read_bytes()[: block.stat().st_size * 2 // 3])  # the tail of the log, cut off
        (block.parent / "index.db").unlink(missing_ok=True)  # the state snapshot: recovered from the block
        server = EmbeddedNats(tmp_path / "nats", sync="default")
        own = own.model_copy(update={"nats_url": server.start()})
        bus = await Bus.connect(own, source="tamper-test")
        kept = (await bus.js.stream_info(EVENTS_STREAM)).state.last_seq
        assert kept < last, "the cut lost messages"
        report = await verify(bus, pool, schema, signer.public)
        first: Any = report.first
        assert not report.ok and first is not None, "a log cut short goes unnoticed"
        assert (first.kind, first.seq, first.where) == ("deleted", kept + 1, "stream"), report.divergences
        assert not [d for d in report.divergences if d.kind == "stale"]
    finally:
        await bus.close()
        server.stop()
        await drop_schema(pool, schema)
