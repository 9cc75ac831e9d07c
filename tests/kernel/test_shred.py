"""Crypto-shredding in the kernel: personal fields sealed on publish, opened on decode, erased
when the data subject's key is destroyed — against the session's real NATS JetStream."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import nats.errors
import nats.js.errors
import pytest
from agentos_kernel import Bus, BusUnavailable, KernelSettings, sealing, shred
from agentos_kernel.testing import eventually, unique
from agentos_schemas import Event, codec
from agentos_schemas.events.ingress import SaleRecorded, TicketReceived
from agentos_schemas.personal import ERASED, PERSONAL, personal_plan
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import BaseModel, Field


def ticket(bus: Bus, tenant: str, customer: str | None, name: str, text: str) -> Event[Any]:
    data = TicketReceived(
        system="zendesk",
        ticket_id=unique("tk"),
        subject=f"Help {name}",
        description=text,
        requester_id=customer,
        requester_name=name,
    )
    return bus.new(data, tenant=tenant)


async def stored(bus: Bus, event_id: str, tenant: str) -> bytes:
    msg = await bus.js.get_last_msg("AGENTOS_EVENTS", f"agentos.{tenant}.ticket.received")
    assert msg.headers and msg.headers.get("Nats-Msg-Id") == event_id
    return bytes(msg.data or b"")


def test_catalogue_marks_ticket_fields() -> None:
    plan = personal_plan(TicketReceived)
    assert plan is not None and plan.subject_field == "requester_id"
    assert set(plan.fields) == {"subject", "description", "requester_name", "requester_email"}
    assert shred.plan_for(SaleRecorded.ce_type()) is None  # no personal fields: nothing to do
    schema = TicketReceived.model_json_schema()["properties"]
    assert schema["requester_name"]["x-agentos-personal"] is True
    assert schema["requester_id"]["x-agentos-data-subject"] is True


def test_personal_fields_must_be_plain_text() -> None:
    class Bad(BaseModel):
        age: Annotated[int, PERSONAL] = 0

    class Constrained(BaseModel):
        name: Annotated[str, PERSONAL, Field(max_length=10)] = ""

    for cls in (Bad, Constrained):
        with pytest.raises(TypeError, match="personal fields"):
            personal_plan(cls)


def test_wrong_or_missing_key_reads_as_erased() -> None:
    name = shred.key_name("t", "c1")
    aead = AESGCM(AESGCM.generate_key(bit_length=256))
    t = "dev.agentos.ticket.received.v1"
    token = shred.seal_value("Ada Lovelace", name, 7, aead, t, "requester_name")
    assert "Ada" not in token and token.startswith("agentos-enc:v1:")
    assert shred.open_value(token, (7, aead), t, "requester_name") == "Ada Lovelace"
    assert shred.open_value(token, None, t, "requester_name") == ERASED  # key destroyed
    assert shred.open_value(token, (8, aead), t, "requester_name") == ERASED  # a later key of the subject
    other = AESGCM(AESGCM.generate_key(bit_length=256))
    assert shred.open_value(token, (7, other), t, "requester_name") == ERASED  # wrong key
    assert shred.open_value(token, (7, aead), t, "description") == ERASED  # moved to another field
    assert shred.open_value(token[:-6] + "AAAAAA", (7, aead), t, "requester_name") == ERASED  # tampered
    assert shred.open_value("agentos-enc:v1:garbage", (7, aead), t, "requester_name") == ERASED
    assert shred.open_value("plain text", None, t, "requester_name") == "plain text"


async def test_sealed_on_publish_opened_on_decode_erased_after(bus: Bus, settings: KernelSettings, tenant: str) -> None:
    ada, bob = unique("cust"), unique("cust")
    a = ticket(bus, tenant, ada, "Ada Lovelace", "My parcel to 12 Analytical Row never came")
    await bus.publish(a)
    raw = await stored(bus, a.id, tenant)
    assert b"Lovelace" not in raw and b"Analytical" not in raw and b"agentos-enc:v1:" in raw
    assert ada.encode() in raw  # the data subject's id stays: it is the pseudonym the key hangs on
    decoded = await bus.decode(raw, {})
    assert decoded.data.requester_name == "Ada Lovelace" and decoded.data.subject == "Help Ada Lovelace"
    b = ticket(bus, tenant, bob, "Bob Babbage", "Refund please")
    await bus.publish_many([b])

    other = await Bus.connect(settings, source="test-shred-other")  # another process, key cached
    try:
        assert (await other.decode(raw, {})).data.requester_name == "Ada Lovelace"
        erased = await shred.erase(bus.js, tenant, ada)
        assert erased.key == shred.key_name(tenant, ada) and erased.revision > 0

        async def forgotten() -> bool:  # every process's cache hears the purge (a KV watch)
            return (await bus.decode(raw, {})).data.requester_name == ERASED and (
                await other.decode(raw, {})
            ).data.description == ERASED

        await eventually(forgotten, timeout=20)
        b_raw = await stored(bus, b.id, tenant)
        assert (await other.decode(b_raw, {})).data.requester_name == "Bob Babbage"
    finally:
        await other.close()
    # the key's message was overwritten and purged: only the purge marker is left
    with pytest.raises(nats.js.errors.NotFoundError):
        await bus.js.get_msg(shred.KEYS_STREAM, erased.revision)
    # the customer comes back: a new key (a new revision) — the old tokens stay erased
    again = ticket(bus, tenant, ada, "Ada Lovelace", "Second try")
    await bus.publish(again)
    assert (await bus.decode(await stored(bus, again.id, tenant), {})).data.description == "Second try"
    assert (await bus.decode(raw, {})).data.description == ERASED


async def test_redaction_runs_first_and_no_subject_gets_a_key_per_event(bus: Bus, tenant: str) -> None:
    e = ticket(bus, tenant, None, "Cy", "call me on +44 20 7946 0958 or cy@example.org")
    await bus.publish(e)
    raw = await stored(bus, e.id, tenant)
    assert b"7946" not in raw and b"example.org" not in raw
    decoded = await bus.decode(raw, {})
    assert decoded.data.description == "call me on [PHONE] or [EMAIL]"  # redacted, then sealed, opened intact
    await shred.erase(bus.js, tenant, f"event:{e.id}")

    async def erased() -> bool:  # this process's cached key goes when its watch hears the purge
        return (await bus.decode(raw, {})).data.requester_name == ERASED

    await eventually(erased, timeout=20)


async def test_consumer_survives_undecryptable_fields(bus: Bus, tenant: str) -> None:
    """A field sealed under a key that was never stored (or is gone) reaches the handler as erased;
    the consumer neither dies nor dead-letters it."""
    seen: list[Event[Any]] = []
    event = ticket(bus, tenant, unique("c"), "Dee", "hello")
    bogus = AESGCM(AESGCM.generate_key(bit_length=256))
    name = shred.key_name(tenant, "nobody")
    sealed = {f: shred.seal_value("secret " + f, name, 1, bogus, event.type, f) for f in ("subject", "description")}
    event.data = event.data.model_copy(update=sealed)
    body = codec.encode(event)  # published as is: no key behind these tokens
    await bus.publish_raw(f"agentos.{tenant}.ticket.received", body, codec.headers_for(event))
    good = ticket(bus, tenant, unique("c"), "Eve", "fine")
    await bus.publish(good)

    async def handle(e: Event[Any]) -> None:
        seen.append(e)

    consumer = bus.consumer(unique("shred"), [f"agentos.{tenant}.ticket.received"], handle)
    await consumer.start()
    try:
        await eventually(lambda: asyncio.sleep(0, len(seen) >= 2), timeout=20)
    finally:
        await consumer.stop()
    by_id = {e.id: e for e in seen}
    assert by_id[event.id].data.subject == ERASED and by_id[event.id].data.description == ERASED
    assert by_id[good.id].data.description == "fine"


@pytest.mark.connected  # starts a NATS server of its own
async def test_least_privilege_gateway_seals_others_read_only(tmp_path: Any) -> None:
    """With per-service NATS users: the gateway creates keys and publishes sealed tickets, the
    orchestrator (any service) decrypts them but cannot create or destroy a key."""
    from agentos_kernel.embedded import EmbeddedNats
    from pydantic import SecretStr

    server = EmbeddedNats(tmp_path / "nats", sync="default", auth=True)
    url = server.start()
    try:

        def as_user(user: str) -> KernelSettings:
            return KernelSettings(
                nats_url=url,
                state_dir=tmp_path,
                publish_timeout_s=5,
                nats_user=user,
                nats_password=SecretStr(server.credentials[user]["password"]),
            )

        admin = await Bus.connect(as_user("admin"), source="admin")
        await admin.provision()
        gateway = await Bus.connect(as_user("gateway"), source="gateway")
        reader = await Bus.connect(as_user("orchestrator"), source="orchestrator")
        try:
            event = ticket(gateway, "acme", "c42", "Fay Fairfax", "where is my order")
            await gateway.publish(event)  # creates the bucket and the key, seals, publishes
            msg = await admin.js.get_last_msg("AGENTOS_EVENTS", "agentos.acme.ticket.received")
            assert b"Fairfax" not in (msg.data or b"")
            assert (await reader.decode(msg.data, msg.headers)).data.requester_name == "Fay Fairfax"
            keys = await reader.shredder.keys.bucket()
            with pytest.raises(nats.errors.TimeoutError):  # no PubAck: the server refused it
                await keys.purge(shred.key_name("acme", "c42"))
            with pytest.raises(BusUnavailable):  # nor may it create keys (nothing is published)
                await asyncio.wait_for(reader.publish(ticket(reader, "acme", "c43", "Gus", "hi")), 10)
            assert any(d.startswith("$kv.agentos_subject_keys.") for d in reader.denied)
            assert (await reader.decode(msg.data, msg.headers)).data.requester_name == "Fay Fairfax"
            await shred.erase(admin.js, "acme", "c42")  # the operator (admin) erases
            assert (await admin.decode(msg.data, msg.headers)).data.requester_name == ERASED
        finally:
            for b in (reader, gateway, admin):
                await b.close()
    finally:
        server.stop()


async def test_concurrent_requests_for_the_same_keys_never_unready_each_other(bus: Bus, tenant: str) -> None:
    """Many requests readying the same new customers' keys at once (a gateway under load): each
    one's key stays ready until it has sealed, whoever created it."""
    customers = [unique("cust") for _ in range(5)]
    events = [ticket(bus, tenant, customers[i % 5], "Name", f"text {i}") for i in range(200)]

    async def request(event: Event[Any]) -> bytes:
        plan = shred.plan_for(event.type)
        assert plan is not None
        await bus.shredder.ready(event, plan)
        await asyncio.sleep(0)  # other requests run between ready() and seal()
        subject, body, _headers = bus._prepare_inline(event)
        assert subject is not None
        return body

    bodies = await asyncio.gather(*(request(e) for e in events))
    assert all(b"agentos-enc:v1:" in b and b"text " not in b for b in bodies)


async def test_a_burst_for_new_subjects_makes_one_lookup_per_subject(bus: Bus, tenant: str) -> None:
    """Concurrent readies of one new data subject share one KV read and one create (single
    flight), instead of every request of a burst asking the key store on its own."""
    keys = shred.SubjectKeys(bus.js)
    reads: list[str] = []
    real_read = keys._read

    async def counted(name: str) -> Any:
        reads.append(name)
        return await real_read(name)

    keys._read = counted  # type: ignore[method-assign]
    try:
        names = [shred.key_name(tenant, unique("cust")) for _ in range(3)]
        got = await asyncio.gather(*(keys.for_sealing(names[i % 3]) for i in range(300)))
        for i, key in enumerate(got):
            assert key is got[i % 3]  # every caller of a name got the very same key
        assert sorted(reads) == sorted(names * 2)  # per name: the miss, then the read-back of its create
        assert not keys._flights
        reads.clear()
        await asyncio.gather(*(keys.for_sealing(n) for n in names))
        assert reads == []  # cached now
    finally:
        await keys.close()


def test_nonces_are_never_handed_out_twice() -> None:
    """Nonces come from the OS in blocks: across block refills, and in a forked child (which
    drops the parent's block), no nonce repeats."""
    import os

    pool = sealing._Nonces()
    taken = [pool.take() for _ in range(3 * 340 + 7)]  # three refills and a bit
    assert all(len(n) == 12 for n in taken) and len(set(taken)) == len(taken)
    pool.take()  # a block is in use here …
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # … and the child must not continue it
        os.write(write, pool.take())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 12)
    assert child != pool.take() and child not in taken
