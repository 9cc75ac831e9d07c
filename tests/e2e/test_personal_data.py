"""Personal data and secrets reach no store in clear, and erasure reaches every sealed copy.

A whole runtime (every service a child process, its own NATS, the session's Postgres, the
offline model over HTTP) is given an SSN, an e-mail address, a card number and an API key in a
goal, in a ticket webhook through the gateway, in a tool's result, in a model's tool-call
arguments that need a human's approval (and in the approver's reason), and in inputs the gateway
rejects. Then every place data lands is read back: every message of every stream (events, dead
letters, each key-value bucket, the object store), every row of every table in every schema of
the database, and every log file. None holds a planted value. ``agentos audit erase`` then makes
the sealed copies (the ticket's personal fields, the rejected inputs' originals) unreadable.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import yaml
from agentos_cli import registry
from agentos_cli.main import wait_for_services
from agentos_cli.supervisor import Runtime
from agentos_kernel import Bus, KernelSettings, guard, shred
from agentos_kernel.testing import eventually, unique
from agentos_schemas import DLQ_STREAM, EVENTS_STREAM
from agentos_schemas.events import GoalCompleted
from agentos_schemas.personal import ERASED

from tests.e2e.conftest import charters_dir, outcome, scenario_file

AGENTOS = str(Path(sys.executable).parent / "agentos")
EMAIL, SSN, CARD = "jane.doe@example.com", "123-45-6789", "4111 1111 1111 1111"
API_KEY = "sk-proj-Q8wErTy5uIoPaSdFgHjKlZxCvBnM12"
NAME = "Ada Lovelace"  # not pattern-detectable: only sealing keeps it out of the stores
PLANTED = (EMAIL, SSN, CARD, CARD.replace(" ", ""), API_KEY)
SEEDED = f"customer {EMAIL}, SSN {SSN}, card {CARD}, api key {API_KEY}"
REQUESTER = "9001-" + unique("rq")

CHARTER = (
    '---\nname: {name}\nversion: "1"\nrole: {role}\ncapabilities: [{capability}]\nmodel: fast\n'
    "tools: [{tools}]\nmax_tool_rounds: 2\ncapacity: 2\nmemory: {{kinds: [], k: 0}}\n"
    "output_schema: {{type: object, required: [answer], properties: {{answer: {{type: string}}}}}}\n"
    "---\nDo the step and answer in JSON.\n"
)


def rules(page: str) -> list[dict[str, Any]]:
    """The offline model's answers for the tour: a plan of two steps, a fetch whose page holds the
    planted values, a payment whose arguments hold them (high risk: two approvers), and answers
    that repeat them."""
    answer = {"json": {"answer": f"done for {SEEDED}"}}
    return [
        {
            "name": "plan-pii",
            "match": {"agent": "planner", "user_contains": "PII-TOUR"},
            "respond": {
                "json": {
                    "steps": [
                        {"step_id": "look-up", "capability": "pii-fetch", "instruction": "Fetch the customer's page."},
                        {
                            "step_id": "pay",
                            "capability": "payments",
                            "depends_on": ["look-up"],
                            "instruction": "Refund the customer.",
                        },
                    ]
                }
            },
        },
        {
            "name": "fetcher-fetches",
            "match": {"agent": "pii-fetcher", "has_tool_result": False},
            "respond": {"tool_calls": [{"name": "fetch_url", "arguments": {"url": page}}]},
        },
        {"name": "fetcher-answers", "match": {"agent": "pii-fetcher"}, "respond": answer},
        {
            "name": "finance-pays",
            "match": {"agent": "finance", "has_tool_result": False},
            "respond": {
                "tool_calls": [
                    {
                        "name": "transfer_funds",
                        "arguments": {"amount": "120", "to": EMAIL, "card": CARD, "memo": f"SSN {SSN} key {API_KEY}"},
                    }
                ]
            },
        },
        {"name": "finance-answers", "match": {"agent": "finance"}, "respond": answer},
    ]


class _Page(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"Customer record: {SEEDED}".encode()
        self.send_response(200)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def page() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/customer"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
async def tour(servers: tuple[str, str], tmp_path_factory: pytest.TempPathFactory, page: str) -> AsyncIterator[Runtime]:
    state = tmp_path_factory.mktemp("pii")
    charters = charters_dir(state)
    (charters / "pii-fetcher.md").write_text(
        CHARTER.format(name="pii-fetcher", role="Reads a customer's page.", capability="pii-fetch", tools="fetch_url")
    )
    (charters / "finance.md").write_text(
        CHARTER.format(name="finance", role="Moves money.", capability="payments", tools="")
    )
    scenario = scenario_file(state)
    merged = yaml.safe_load(scenario.read_text())
    merged["rules"] = rules(page) + merged["rules"]
    scenario.write_text(yaml.safe_dump(merged, sort_keys=False))
    env = {
        "AGENTOS_CHARTERS_DIR": str(charters),
        "AGENTOS_OFFLINE_SCENARIO": str(scenario),
        "AGENTOS_ALLOW_LLM_CALLS": "0",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    rt = Runtime(
        KernelSettings(database_url=servers[1], state_dir=state, nats_sync="default"),
        registry.available(),
        logs=state / "logs",
    )
    try:
        resolved = await rt.start()
        bus = await Bus.connect(resolved, source="pii-tour")
        await wait_for_services(bus, rt.services)
        await bus.close()
        yield rt
    finally:
        await rt.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def cli(rt: Runtime, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTOS_")}
    env["AGENTOS_STATE_DIR"] = str(rt.settings.state_dir)
    return subprocess.run([AGENTOS, *args], env=env, capture_output=True, text=True, timeout=60, check=False)


def leaks(text: str, *, names: bool = True) -> list[str]:
    return [v for v in (*PLANTED, *((NAME,) if names else ())) if v in text]


async def gateway_url(bus: Bus) -> str:
    kv = await bus.js.key_value("AGENTOS_HEALTH")
    for key in await kv.keys():
        if key.startswith("gateway."):
            url = json.loads((await kv.get(key)).value or b"{}").get("url")
            if url:
                return str(url)
    raise AssertionError("no gateway reported a URL")


def zendesk_ticket(requester: str, padding: int = 0) -> dict[str, Any]:
    return {
        "type": "zen:event-type:ticket.created",
        "account_id": 1,
        "id": unique("zd"),
        "time": "2026-12-06T09:00:00Z",
        "zendesk_event_version": "2022-11-06",
        "subject": "zen:ticket:7",
        "detail": {
            "id": "7" if not padding else "8",
            "subject": f"Refund for {NAME}",
            "description": f"I am {NAME}. {SEEDED} " + "padding " * padding,
            "priority": "HIGH",
            "status": "OPEN",
            "requester_id": requester,
            "tags": ["vip"],
        },
    }


async def plant_at_the_gateway(url: str) -> str:
    """A ticket webhook, and two rejected inputs; returns the typed rejection's event id."""
    typo = {
        "specversion": "1.0",
        "id": unique("ev"),
        "source": "crm",
        "type": "dev.agentos.ticket.received.v1",
        "data": {
            "system": "crm",
            "ticket_id": ["not", "a", "string"],
            "requester_id": REQUESTER,
            "requester_name": NAME,
            "description": SEEDED,
            "tags": [EMAIL],
        },
    }
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        ok = await http.post(
            "/ingest/zendesk", json=zendesk_ticket(REQUESTER), headers={"idempotency-key": f"tk {EMAIL}"}
        )  # the response is kept under it
        assert ok.status_code < 300, ok.text
        bad = await http.post(
            "/events",
            content=json.dumps(typo),
            headers={"content-type": "application/cloudevents+json", "x-note": SEEDED},
        )
        assert bad.status_code in (400, 422), bad.text
        garbled = await http.post(
            "/events", content=b"{not json " + SEEDED.encode(), headers={"content-type": "application/cloudevents+json"}
        )
        assert garbled.status_code == 400, garbled.text
    return str(typo["id"])


async def plant_a_large_ticket(url: str, bus: Bus) -> None:
    """A ticket over the claim-check threshold: its payload goes to the object store."""
    before = (await bus.js.stream_info("OBJ_AGENTOS_PAYLOADS")).state.messages
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        ok = await http.post("/ingest/zendesk", json=zendesk_ticket(unique("big"), padding=9000))
        assert ok.status_code < 300, ok.text

    async def stored() -> bool:
        return (await bus.js.stream_info("OBJ_AGENTOS_PAYLOADS")).state.messages > before

    await eventually(stored, timeout=10)


def pending_approvals(rt: Runtime) -> set[str]:
    out = cli(rt, "approvals", "--json")
    return (
        {a["approval_id"] for a in json.loads(out.stdout or "{}").get("approvals", [])}
        if out.returncode == 0
        else set()
    )


async def reject_the_payment(rt: Runtime, before: set[str]) -> None:
    """The payment waits for two approvers; one rejects it, with a reason that names the customer.
    The session's database may hold other tests' pending approvals: only a new one is the payment's."""
    found: list[str] = []

    async def pending() -> bool:
        found[:] = sorted(pending_approvals(rt) - before)
        return bool(found)

    await eventually(pending, timeout=60, every=1.0)
    done = cli(rt, "reject", found[0], "--as", "alice", "--reason", f"not for {EMAIL} / {CARD}")
    assert done.returncode == 0, done.stdout + done.stderr


async def stored_messages(bus: Bus) -> list[tuple[str, int, bytes, dict[str, str]]]:
    out = []
    for info in await bus.js.streams_info():
        name = info.config.name or ""
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            try:
                msg = await bus.js.get_msg(name, seq)
            except Exception:  # a deleted message
                continue
            out.append((name, seq, bytes(msg.data or b""), dict(msg.headers or {})))
    return out


def scan_messages(messages: list[tuple[str, int, bytes, dict[str, str]]], found: list[str]) -> set[str]:
    """Every message's body and headers; each planted value found is added to ``found``."""
    streams = set()
    for name, seq, data, headers in messages:
        text = data.decode(errors="replace") + json.dumps(headers)
        if leaks(text):
            found.append(f"{name} seq {seq}: {leaks(text)} in {text[:200]}")
        streams.add(name)
    return streams


async def scan_database(url: str, found: list[str]) -> tuple[set[str], Path]:
    """Every row of every table of every schema; returns the tables and the data directory."""
    conn = await asyncpg.connect(url)
    try:
        tables = await conn.fetch(
            "SELECT table_schema, table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE' "
            "AND table_schema NOT IN ('pg_catalog', 'information_schema')"
        )
        for t in tables:
            rows = await conn.fetch(f'SELECT t::text AS row FROM "{t["table_schema"]}"."{t["table_name"]}" t')
            found += [f"{t['table_schema']}.{t['table_name']}: {leaks(r['row'])}" for r in rows if leaks(r["row"])]
        return {f"{t['table_schema']}.{t['table_name']}" for t in tables}, Path(
            await conn.fetchval("SHOW data_directory")
        )
    finally:
        await conn.close()


def scan_logs(root: Path, found: list[str]) -> int:
    """Every log file under ``root`` (services', nats-server's, Postgres's)."""
    files = [
        p for p in root.rglob("*") if p.is_file() and (p.suffix in (".log", ".txt") or {"logs", "log"} & set(p.parts))
    ]
    for path in files:
        text = path.read_text(errors="replace")
        found += [f"{path}: {leaks(line)} in {line[:200]}" for line in text.splitlines() if leaks(line)][:3]
    return len(files)


async def erase_and_check(tour: Runtime, bus: Bus, typo_id: str) -> None:
    """The sealed copies open before the erasure and are unreadable after it, in every store."""
    messages = await stored_messages(bus)
    letters = [h for name, _, _, h in messages if name == DLQ_STREAM and h.get(guard.RAW_HEADER)]
    typed = [h for h in letters if h.get(guard.SUBJECT_HEADER) == REQUESTER]
    untyped = [h for h in letters if h.get(guard.SUBJECT_HEADER, "").startswith("dead-letter:")]
    assert typed and untyped, letters
    opened = await guard.open_dead_letter(bus.shredder.keys, typed[0])
    assert opened is not None and NAME.encode() in opened and typo_id.encode() in opened
    ticket = next(
        (d, h)
        for name, _, d, h in messages
        if name == EVENTS_STREAM and h.get("ce-type") == "dev.agentos.ticket.received.v1"
    )
    assert (await bus.decode(*ticket)).data.subject == f"Refund for {NAME}"

    for subject in (REQUESTER, untyped[0][guard.SUBJECT_HEADER]):
        erased = cli(tour, "audit", "erase", subject, "--reason", "DSR-1")
        assert erased.returncode == 0 and "destroyed" in erased.stdout, erased.stdout + erased.stderr

    async def unreadable() -> bool:
        return (await bus.decode(*ticket)).data.subject == ERASED

    await eventually(unreadable, timeout=20)
    fresh = shred.SubjectKeys(bus.js)  # a process that never saw the keys
    try:
        for headers in (typed[0], untyped[0]):
            assert await guard.open_dead_letter(fresh, headers) is None
            assert await guard.open_dead_letter(bus.shredder.keys, headers) is None
    finally:
        await fresh.close()
    conn = await asyncpg.connect(tour.settings.database_url)

    async def projected() -> bool:
        rows = await conn.fetch("SELECT description FROM audit.v_ticket_received WHERE ticket_id = '7'")
        return bool(rows) and {r["description"] for r in rows} == {ERASED}

    try:
        await eventually(projected, timeout=30, every=0.5)
    finally:
        await conn.close()


async def scan_everything(tour: Runtime, bus: Bus) -> None:
    found: list[str] = []
    streams = scan_messages(await stored_messages(bus), found)
    assert {
        EVENTS_STREAM,
        DLQ_STREAM,
        "KV_AGENTOS_CONTEXTS",
        "KV_AGENTOS_SUBJECT_KEYS",
        "KV_AGENTOS_HEALTH",
        "KV_AGENTOS_GATEWAY_IDEMPOTENCY",
        "OBJ_AGENTOS_PAYLOADS",
    } <= streams, streams
    tables, pgdata = await scan_database(tour.settings.database_url or "", found)
    assert {"policy.approvals", "policy.approval_votes", "audit.events", "memory.entries"} <= tables
    assert scan_logs(tour.settings.state_dir, found) >= len(tour.services)
    scan_logs(pgdata.parent, found)  # the Postgres server's own log
    assert not found, "\n".join(found)


async def test_planted_personal_data_reaches_no_store_and_erasure_reaches_every_sealed_copy(tour: Runtime) -> None:
    bus = await Bus.connect(tour.settings, source="pii-tour-test")
    try:
        url = await gateway_url(bus)
        typo_id = await plant_at_the_gateway(url)
        before = pending_approvals(tour)
        goal = cli(tour, "submit", "--no-watch", f"PII-TOUR refund the {SEEDED}")
        assert goal.returncode == 0, goal.stdout + goal.stderr
        goal_id = goal.stdout.split("submitted goal", 1)[1].split()[0]
        await reject_the_payment(tour, before)
        done, events = await outcome(bus, goal_id)
        assert isinstance(done.data, GoalCompleted), done.data
        assert any(e.type.endswith("approval.decided.v1") for e in events)
        await erase_and_check(tour, bus, typo_id)
        await plant_a_large_ticket(url, bus)
        await asyncio.sleep(2.0)  # the projections (audit, policy, memory) catch up
        await scan_everything(tour, bus)
    finally:
        await bus.close()
