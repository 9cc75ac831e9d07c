"""Erasure by crypto-shredding, end to end: after `agentos audit erase`, the subject's personal data
is unreadable everywhere (kernel decode, projection views, export, the stream's and the claim-check
store's bytes), the other subject's still decrypts, and `agentos audit verify` still passes."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import asyncpg
from agentos_audit.projector import Projector
from agentos_audit.signing import public_path
from agentos_kernel import Bus, KernelSettings
from agentos_kernel.testing import eventually, unique
from agentos_schemas import Event
from agentos_schemas.events.ingress import TicketReceived, TicketUpdated
from agentos_schemas.personal import ERASED

from tests.audit.conftest import caught_up
from tests.audit.test_cli import cli

PRIVATE = ("Lovelace", "Analytical Row", "ada-secret-words", "Babbage", "Difference Lane")


async def stream_bodies(bus: Bus, tenant: str) -> list[tuple[bytes, dict[str, str]]]:
    """Every stored message of the tenant, straight from the stream."""
    psub = await bus.js.pull_subscribe(f"agentos.{tenant}.>", stream="AGENTOS_EVENTS")
    out: list[tuple[bytes, dict[str, str]]] = []
    try:
        while True:
            try:
                msgs = await psub.fetch(50, timeout=1.0)
            except Exception:
                break
            for m in msgs:
                out.append((bytes(m.data), dict(m.headers or {})))
                await m.ack()
    finally:
        await psub.unsubscribe()
    return out


async def test_erasure_shreds_one_subject_everywhere_and_verify_passes(
    bus: Bus,
    pool: asyncpg.Pool,
    audit: Projector,
    settings: KernelSettings,
    tenant: str,
    key_file: Path,
    tmp_path: Path,
) -> None:
    ada, bob = unique("cust"), unique("cust")
    long_text = "ada-secret-words " * 5000  # over the claim-check threshold: goes to the object store
    events: list[Event[Any]] = [
        bus.new(
            TicketReceived(
                system="zendesk",
                ticket_id="1",
                subject="Parcel lost",
                requester_id=ada,
                requester_name="Ada Lovelace",
                description="Send it to 12 Analytical Row",
            ),
            tenant=tenant,
        ),
        bus.new(
            TicketReceived(
                system="zendesk",
                ticket_id="2",
                subject="Long story",
                requester_id=ada,
                requester_name="Ada Lovelace",
                description=long_text,
            ),
            tenant=tenant,
        ),
        bus.new(
            TicketUpdated(
                system="zendesk",
                ticket_id="1",
                change="subject_changed",
                previous="Parcel lost",
                current="Parcel lost, Ada Lovelace",
                requester_id=ada,
            ),
            tenant=tenant,
        ),
        bus.new(
            TicketReceived(
                system="zendesk",
                ticket_id="3",
                subject="Refund",
                requester_id=bob,
                requester_name="Bob Babbage",
                description="I live on Difference Lane",
            ),
            tenant=tenant,
        ),
    ]
    for event in events:
        await bus.publish(event)
    await caught_up(bus, pool, audit.schema)
    s = audit.schema

    # before: the kernel decrypts; nothing personal is stored in clear anywhere
    stored = await stream_bodies(bus, tenant)
    assert len(stored) == 4
    decoded = {e.id: e for e in [await bus.decode(b, h) for b, h in stored]}
    assert decoded[events[0].id].data.requester_name == "Ada Lovelace"
    assert decoded[events[1].id].data.description == long_text
    assert decoded[events[2].id].data.current == "Parcel lost, Ada Lovelace"
    rows = await pool.fetch(f"SELECT id, tags, data::text AS data FROM {s}.events WHERE tenant = $1", tenant)
    assert len(rows) == 4 and all("pii:encrypted" in r["tags"] and "personal_data" in r["tags"] for r in rows)
    view = {
        r["id"]: r
        for r in await pool.fetch(
            f"SELECT id, requester_name, description FROM {s}.v_ticket_received WHERE tenant = $1", tenant
        )
    }
    assert {r["requester_name"] for r in view.values()} == {"[ENCRYPTED]"}

    # erase Ada through the CLI
    result = await cli(settings, tmp_path, s, "erase", ada, "--tenant", tenant, "--reason", "DSR-17", "--as", "dpo")
    assert result.exit_code == 0 and "destroyed" in result.stdout, result.output
    await caught_up(bus, pool, audit.schema)

    # the erasure is in the log, without personal data
    stored = await stream_bodies(bus, tenant)
    erasures = [b for b, _ in stored if b'"dev.agentos.erasure.recorded.v1"' in b]
    assert len(erasures) == 1 and ada.encode() not in erasures[0] and b"user:dpo" in erasures[0]

    # kernel decode: Ada's fields are erased, Bob's still decrypt (this process had Ada's key
    # cached; it goes as soon as its watch of the key bucket hears the purge)
    ada_first = next((b, h) for b, h in stored if (h or {}).get("Nats-Msg-Id") == events[0].id)

    async def forgotten() -> bool:
        return bool((await bus.decode(*ada_first)).data.requester_name == ERASED)

    await eventually(forgotten, timeout=20)
    decoded = {e.id: e for e in [await bus.decode(b, h) for b, h in stored]}
    for event in events[:2]:
        got = decoded[event.id].data
        assert (got.requester_name, got.description, got.subject) == (ERASED, ERASED, ERASED)
    assert (decoded[events[2].id].data.previous, decoded[events[2].id].data.current) == (ERASED, ERASED)
    assert decoded[events[0].id].data.ticket_id == "1"  # what is not personal is untouched
    bob_ticket = decoded[events[3].id].data
    assert (bob_ticket.requester_name, bob_ticket.description) == ("Bob Babbage", "I live on Difference Lane")

    # the stored bytes (stream and claim-check object store) never held the plaintext
    objects = await bus.js.object_store("AGENTOS_PAYLOADS")
    ref = next(b for b, _ in stored if b'"dataref"' in b)
    blob = (await objects.get(json.loads(ref)["dataref"].rsplit("/", 1)[1])).data or b""
    for body in [*(b for b, _ in stored), blob]:
        assert not any(p.encode() in body for p in PRIVATE)

    # the projection: rows hold only ciphertext; the views read erased / encrypted
    rows = await pool.fetch(f"SELECT data::text AS data FROM {s}.events WHERE tenant = $1", tenant)
    assert not any(p in r["data"] for r in rows for p in PRIVATE)
    view = {
        r["id"]: r
        for r in await pool.fetch(
            f"SELECT id, requester_name, description, data_subject FROM {s}.v_ticket_received WHERE tenant = $1", tenant
        )
    }
    assert [tuple(view[e.id][c] for c in ("requester_name", "description", "data_subject")) for e in events[:2]] == [
        (ERASED, ERASED, ERASED)
    ] * 2
    assert view[events[3].id]["requester_name"] == "[ENCRYPTED]"
    updated = await pool.fetchrow(f"SELECT previous, current FROM {s}.v_ticket_updated WHERE id = $1", events[2].id)
    assert tuple(updated) == (ERASED, ERASED)

    # the export: Ada's fields erased, Bob's still sealed (decryptable with his live key)
    result = await cli(settings, tmp_path, s, "export", "--tenant", tenant)
    assert result.exit_code == 0, result.output
    exported = {r["id"]: r["data"] for r in map(json.loads, result.stdout.splitlines())}
    assert exported[events[0].id]["requester_name"] == ERASED and exported[events[1].id]["description"] == ERASED
    assert exported[events[2].id]["current"] == ERASED
    assert exported[events[3].id]["requester_name"].startswith("agentos-enc:v1:")
    assert not any(p in result.stdout for p in PRIVATE)

    # the chain still verifies: erasure changed no stored byte
    result = await cli(settings, tmp_path, s, "verify", "--public-key", str(public_path(key_file)))
    assert result.exit_code == 0 and "OK:" in result.stdout, result.output

    # every proof still verifies: the tree, too, is over the stored (sealed) bytes
    from agentos_audit.prove import checkpoint_now, inclusion_proof
    from agentos_audit.publish import Publisher
    from agentos_audit.signing import load_private, vkey
    from agentos_verify import Verifier, check

    signer = load_private(key_file)
    await checkpoint_now(bus, pool, s, signer, Publisher(bus, s, "agentos.local/audit"))
    key = Verifier.parse(vkey("agentos.local/audit", signer.public))
    for event in events:
        doc = await inclusion_proof(pool, s, event.id)
        assert check(doc, key)["event_id"] == event.id
        assert not any(p.encode() in base64.b64decode(str(doc["entry"])) for p in PRIVATE)


async def test_erase_rejects_bad_input(settings: KernelSettings, tmp_path: Path, audit: Projector) -> None:
    result = await cli(settings, tmp_path, audit.schema, "erase", "  ")
    assert result.exit_code == 2 and "empty" in result.output
    result = await cli(settings, tmp_path, audit.schema, "erase", "c1", "--tenant", "Not A Tenant")
    assert result.exit_code == 2 and "tenant" in result.output and "Traceback" not in result.output
