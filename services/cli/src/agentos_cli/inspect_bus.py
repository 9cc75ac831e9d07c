"""`agentos status`, `agentos tail` and `agentos dlq`: read-only views of the bus."""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

import msgspec
import nats.errors
import nats.js.errors
from agentos_kernel import Bus, KernelSettings
from agentos_schemas import codec
from agentos_schemas import subjects as s
from nats.js import api
from nats.js.kv import KeyValue
from rich.console import Console
from rich.markup import escape

from agentos_cli import health


async def collect_status(
    bus: Bus, *, judge: bool = False, stall_s: float = health.STALL_S, max_lag: int = health.MAX_LAG
) -> dict[str, Any]:
    """Streams, consumers (pending, redelivered, position against the log), dead letters by
    consumer, and service health; with ``judge``, also the Postgres line, the audit projection's
    position, and the ``problems`` found (see :mod:`agentos_cli.health`)."""
    server = f"{bus.settings.nats_url} (server {bus.nc.connected_server_version})"
    out = _empty_status(health.nats(bus.settings.nats_url, True, server))
    out["streams"], out["consumers"] = await _streams_and_consumers(bus)
    out["dead_letters"] = await _dead_letters(bus)
    out["services"], unreadable = await health_records(bus)
    if unreadable:  # not "none reporting": whether they are healthy is unknown (a PROBLEM when judged)
        out["services_unreadable"] = unreadable
    out["held"] = held_work(out["services"])
    if judge:
        from agentos_audit.settings import AuditSettings

        await health.judge(
            out,
            database_url=bus.settings.database_url,
            schema=AuditSettings().schema_name,
            stall_s=stall_s,
            max_lag=max_lag,
        )
    return out


def _empty_status(nats_line: dict[str, Any]) -> dict[str, Any]:
    """A status with only its NATS line, every list still empty."""
    return {
        "dependencies": [nats_line],
        "streams": [],
        "consumers": [],
        "projections": [],
        "dead_letters": {},
        "services": [],
    }


async def _streams_and_consumers(bus: Bus) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The event log's and the DLQ's sizes, and the log's consumers with their positions."""
    streams: list[dict[str, Any]] = []
    consumers: list[dict[str, Any]] = []
    now = time.time()
    for name in (s.EVENTS_STREAM, s.DLQ_STREAM):
        try:
            info = await bus.js.stream_info(name)
        except nats.js.errors.NotFoundError:
            continue
        streams.append(
            {
                "stream": name,
                "messages": info.state.messages,
                "bytes": info.state.bytes,
                "first_seq": info.state.first_seq,
                "last_seq": info.state.last_seq,
            }
        )
        if name == s.EVENTS_STREAM:
            for c in await bus.js.consumers_info(name):
                consumers.append(health.consumer_row(c, info.state.last_seq, now))
    return streams, consumers


async def _dead_letters(bus: Bus) -> dict[str, int]:
    """How many dead letters each consumer left (none when there is no DLQ yet)."""
    counts: dict[str, int] = {}
    with contextlib.suppress(nats.js.errors.NotFoundError):
        dlq = await bus.js.stream_info(s.DLQ_STREAM, subjects_filter="dlq.agentos.>")
        for subject, count in (dlq.state.subjects or {}).items():
            counts[subject.removeprefix("dlq.agentos.")] = count
    return counts


async def unreachable_status(settings: KernelSettings, reason: str) -> dict[str, Any]:
    """The status when NATS cannot be reached: the NATS line red, the Postgres line checked."""
    out = _empty_status(health.nats(settings.nats_url, False, reason))
    out["dependencies"].append(await health.postgres(settings.database_url))
    out["problems"] = [f"{d['dependency']} is unreachable: {d['detail']}" for d in out["dependencies"] if not d["ok"]]
    return out


async def health_records(bus: Bus) -> tuple[list[dict[str, Any]], str | None]:
    """Every instance's health record, and why the records could not be listed, if they could not.
    A record that cannot be read is a row of status ``unreadable`` (a PROBLEM), never left out."""
    try:
        kv = await bus.js.key_value(s.HEALTH_BUCKET)
        keys = await kv.keys()
    except (nats.js.errors.BucketNotFoundError, nats.js.errors.NoKeysError):
        return [], None  # no bucket yet, or no keys: nobody reports
    except (nats.errors.Error, TimeoutError) as exc:
        return [], f"{type(exc).__name__}: {exc}"[:200]
    found = [r for key in keys if (r := await _health_record(kv, key)) is not None]
    return sorted(found, key=lambda r: r.get("service", "")), None


async def _health_record(kv: KeyValue, key: str) -> dict[str, Any] | None:
    """One instance's record with its age; None if it is gone since the keys were listed."""
    try:
        entry = await kv.get(key)
        report = json.loads(entry.value or b"{}")
        if not isinstance(report, dict):
            raise ValueError(f"a JSON {type(report).__name__}, not an object")
    except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
        return None  # expired, or deleted by an instance that stopped
    except (nats.errors.Error, TimeoutError, ValueError) as exc:
        service, _, instance = key.partition(".")
        return {
            "service": service,
            "instance": instance,
            "status": "unreadable",
            "read_error": f"{type(exc).__name__}: {exc}"[:200],
        }
    report["age_s"] = round(time.time() - report.get("ts", 0), 1)
    return report


def held_work(services: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Work the orchestrators hold because no registered agent serves its capability (from their
    health records; one row per goal and step, whichever replica reports it)."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for report in services:
        for item in report.get("held") or []:
            rows.setdefault((str(item.get("goal_id")), str(item.get("step_id") or "")), item)
    return [rows[k] for k in sorted(rows)]


def summarize(body: bytes, headers: dict[str, str] | None) -> tuple[str, str, str, str]:
    """(type, subject, correlation, short data) of an event, tolerant of anything."""
    try:
        wire = codec.decode_wire(body, headers, max_bytes=8 << 20)
    except codec.DecodeError as exc:
        return "<undecodable>", "", "", exc.reason[:100]
    return wire.type, wire.subject or "", wire.correlationid or "", _short_data(wire)


def _short_data(wire: Any) -> str:
    """A line's worth of an event's data: a JSON object's plain fields, text as text, binary as
    its size (and media type)."""
    raw = bytes(wire.data)
    if wire.data_base64 is not None:
        return f"({len(wire.data_base64) * 3 // 4} bytes of {wire.datacontenttype or 'binary data'})"
    if wire.dataref:
        return f"(claim check {wire.dataref})"
    if not raw:
        return ""
    try:
        obj = msgspec.json.decode(raw)
    except msgspec.DecodeError:  # data that is not JSON is shown as no data
        return ""
    if isinstance(obj, str):
        return json.dumps(obj[:160], ensure_ascii=False)
    if isinstance(obj, dict):
        keep = {k: v for k, v in obj.items() if isinstance(v, str | int | float) and k != "goal_id"}
        return json.dumps(keep, ensure_ascii=False)[:160]
    return ""


async def tail(
    bus: Bus, console: Console, *, subject: str, from_start: bool, dlq: bool, limit: int | None, idle_exit: float | None
) -> int:
    """Follow the event log (or the DLQ) live with an ordered ephemeral consumer."""
    stream = s.DLQ_STREAM if dlq else s.EVENTS_STREAM
    policy = api.DeliverPolicy.ALL if from_start else api.DeliverPolicy.NEW
    sub = await bus.js.subscribe(subject, stream=stream, ordered_consumer=True, deliver_policy=policy)
    seen = 0
    try:
        while limit is None or seen < limit:
            try:
                msg = await sub.next_msg(timeout=idle_exit or 3600)
            except (TimeoutError, nats.errors.TimeoutError):
                if idle_exit:
                    break
                continue
            seen += 1
            headers = msg.headers or {}
            type_, _subj, corr, data = summarize(msg.data, headers)
            ts = time.strftime("%H:%M:%S", time.localtime(msg.metadata.timestamp.timestamp()))
            if dlq:
                console.print(
                    f"{ts} [red]{headers.get('AgentOS-DLQ-Consumer', '?')}[/] "
                    f"[bold]{headers.get('AgentOS-DLQ-Code', '?')}[/] "
                    f"{headers.get('AgentOS-DLQ-Reason', '')}",
                    highlight=False,
                    soft_wrap=True,
                )
            else:
                short = type_.removeprefix("dev.agentos.")
                console.print(
                    f"{ts} [bold cyan]{short:<28}[/] {msg.subject:<40} corr={corr[-8:]} {escape(data)}",
                    highlight=False,
                    markup=True,
                    soft_wrap=True,
                )
    finally:
        await sub.unsubscribe()
    return seen
