"""Credentials handed to tools at run time (never to the model), and business records that two
agents can never silently overwrite."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from agentos_kernel import Bus
from agentos_kernel.exceptions import ConfigError
from agentos_kernel.records import LeaseHeld, RecordConflict, Records
from agentos_kernel.redact import install_logging, redact
from agentos_kernel.secrets import SecretNotFound, SecretStore, resolve, secret
from agentos_kernel.testing import unique

from tests.governance.conftest import Fleet


def test_secret_store_hands_values_to_tools_and_redacts_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("AGENTOS_SECRETS_DIR", str(tmp_path / "vault"))
    store = SecretStore.default()
    store.put("crm_api_token", "tok-A9f3Kq72LmZx\n")
    assert oct((tmp_path / "vault" / "crm_api_token").stat().st_mode & 0o777) == "0o600"
    assert secret("crm_api_token") == "tok-A9f3Kq72LmZx"
    # What the model wrote names the secret; the runner resolves it only when the tool runs.
    args = {"url": "https://crm.example/api", "headers": {"Authorization": {"$secret": "crm_api_token"}}}
    assert resolve(args) == {"url": "https://crm.example/api", "headers": {"Authorization": "tok-A9f3Kq72LmZx"}}
    assert store.names() == ["crm_api_token"]
    # A value the store handed out is redacted wherever it shows up again.
    assert redact("the tool echoed tok-A9f3Kq72LmZx back") == "the tool echoed [SECRET] back"
    install_logging()
    with caplog.at_level(logging.INFO, logger="agentos.tools"):
        logging.getLogger("agentos.tools").info("calling CRM with %s", "tok-A9f3Kq72LmZx")
    assert "tok-A9f3Kq72LmZx" not in caplog.text and "[SECRET]" in caplog.text
    with pytest.raises(SecretNotFound, match="nope"):
        secret("nope")
    with pytest.raises(ConfigError):
        secret("../etc/passwd")


async def test_second_writer_of_a_record_gets_a_clear_conflict(fleet: Fleet) -> None:
    """Two agents (specialist users) read the same ticket; the second write is refused, not lost."""
    a = await Bus.connect(fleet.settings_for("specialist"), source="agent-a")
    b = await Bus.connect(fleet.settings_for("specialist"), source="agent-b")
    try:
        ra, rb = await Records.open(a.js, create=False), await Records.open(b.js, create=False)
        ticket = unique("T")
        first = await ra.write("ticket", ticket, {"status": "open"}, expected_revision=0, by="agent:triage")
        with pytest.raises(RecordConflict):
            await rb.write("ticket", ticket, {"status": "dup"}, expected_revision=0, by="agent:other")
        seen_a, seen_b = await ra.read("ticket", ticket), await rb.read("ticket", ticket)
        assert seen_a == seen_b and seen_a is not None and seen_a.revision == first.revision
        won = await ra.write(
            "ticket", ticket, {"status": "refunded"}, expected_revision=seen_a.revision, by="agent:refunds"
        )
        with pytest.raises(RecordConflict, match=r"changed since revision .* by agent:refunds.*re-plan") as lost:
            await rb.write("ticket", ticket, {"status": "closed"}, expected_revision=seen_b.revision, by="agent:closer")
        assert lost.value.current is not None and lost.value.current.data == {"status": "refunded"}
        assert (await rb.read("ticket", ticket)).data == {"status": "refunded"}  # type: ignore[union-attr]
        assert won.revision > first.revision
    finally:
        await a.close()
        await b.close()


async def test_leases_give_one_holder_the_record(fleet: Fleet) -> None:
    records = await Records.open(fleet.bus.js)
    order = unique("O")
    lease = await records.acquire("order", order, "agent:refunds", ttl_s=30)
    with pytest.raises(LeaseHeld, match="leased to agent:refunds"):
        await records.acquire("order", order, "agent:shipping")
    renewed = await records.acquire("order", order, "agent:refunds", ttl_s=30)  # the holder renews
    assert not await records.release(lease)  # a stale handle cannot release the renewed lease
    assert await records.release(renewed)
    short = await records.acquire("order", order, "agent:shipping", ttl_s=0.2)
    await asyncio.sleep(0.3)
    taken = await records.acquire("order", order, "agent:refunds")  # an expired lease is taken over
    assert taken.holder == "agent:refunds" and taken.revision > short.revision
    async with records.leased("order", unique("O"), "agent:x") as held:
        assert held.holder == "agent:x"
