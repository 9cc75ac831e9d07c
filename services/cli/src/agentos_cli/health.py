"""What `agentos status` judges, beyond listing: the dependencies (NATS, Postgres) reachable, each
durable consumer and the audit projection advancing against the log's last sequence, and every
service healthy. Each finding that is not healthy becomes one line in ``problems``; the command
exits non-zero when there is any."""

from __future__ import annotations

import time
from typing import Any

STALL_S = 60.0
"""A consumer or projection with work waiting that has not moved for this long is stalled."""
MAX_LAG = 1000
"""A projection further behind the log than this many messages is behind, moving or not."""


def postgres_errors() -> tuple[type[Exception], ...]:
    """What reaching and reading Postgres raises when it cannot be read (and a bug does not): the
    network (``OSError``: refused, DNS, TLS, timed out), the server's refusal or a query's error
    (``asyncpg.PostgresError``), the client's (``asyncpg.InterfaceError``: a bad URL option, a
    connection lost), a peer that is not Postgres (``InternalClientError``), a URL that does not
    parse (``ValueError``). asyncpg is imported here, when a command reads Postgres."""
    import asyncpg
    from asyncpg.exceptions import InternalClientError

    return (OSError, ValueError, asyncpg.PostgresError, asyncpg.InterfaceError, InternalClientError)


async def postgres(url: str | None) -> dict[str, Any]:
    """The Postgres line: reachable (it answers a query) or why not."""
    if not url:
        return {
            "dependency": "Postgres",
            "ok": False,
            "detail": "no database URL (AGENTOS_DATABASE_URL, or runtime.json)",
        }
    import asyncpg

    try:
        conn = await asyncpg.connect(url, timeout=3.0)
        try:
            version = await conn.fetchval("SHOW server_version", timeout=3.0)
        finally:
            await conn.close()
    except postgres_errors() as exc:  # the line says why: the report is never healthy over it
        return {"dependency": "Postgres", "ok": False, "detail": f"unreachable: {type(exc).__name__}: {exc}"[:200]}
    return {"dependency": "Postgres", "ok": True, "detail": f"server {version}"}


def nats(url: str | None, reachable: bool, detail: str) -> dict[str, Any]:
    return {"dependency": "NATS", "ok": reachable, "detail": detail if reachable else f"{url}: {detail}"}


def _seconds_since(when: Any, now: float) -> float | None:
    return None if when is None else round(now - when.timestamp(), 1)


def consumer_row(c: Any, last_seq: int, now: float) -> dict[str, Any]:
    """One durable consumer's position against the log, and whether it moves."""
    delivered = c.delivered.stream_seq if c.delivered else 0
    acked = c.ack_floor.stream_seq if c.ack_floor else 0
    times = [t for t in (c.delivered and c.delivered.last_active, c.ack_floor and c.ack_floor.last_active) if t]
    idle = _seconds_since(max(times) if times else c.created, now)
    waiting = (c.num_pending or 0) + (c.num_ack_pending or 0)
    return {
        "consumer": c.name,
        "pending": c.num_pending,
        "ack_pending": c.num_ack_pending,
        "redelivered": c.num_redelivered,
        "waiting": c.num_waiting,
        "delivered_seq": delivered,
        "ack_floor_seq": acked,
        "last_seq": last_seq,
        "idle_s": idle,
        "durable": bool(c.config.durable_name),
        "behind": waiting,
    }


def consumer_problem(row: dict[str, Any], stall_s: float) -> str | None:
    if not row["durable"] or not row["behind"] or row["idle_s"] is None or row["idle_s"] < stall_s:
        return None
    return (
        f"consumer {row['consumer']} is stalled: {row['behind']} messages waiting, acknowledged up to "
        f"seq {row['ack_floor_seq']} of {row['last_seq']}, no delivery or ack for {row['idle_s']:.0f}s"
    )


async def projection(
    url: str | None,
    schema: str,
    last_seq: int,
    services: list[dict[str, Any]],
) -> dict[str, Any] | None:
    """The audit projection's chain head (from Postgres) against the log; None when there is none."""
    if not url:
        return None
    import asyncpg

    row: dict[str, Any] = {"projection": f"audit ({schema})", "last_seq": last_seq, "head_seq": None}
    try:
        conn = await asyncpg.connect(url, timeout=3.0)
        try:
            if await conn.fetchval("SELECT to_regclass($1)", f"{schema}.chain", timeout=5.0) is None:
                return None  # no audit service has run against this database
            row["head_seq"] = int(await conn.fetchval(f"SELECT coalesce(max(seq), 0) FROM {schema}.chain", timeout=5.0))
        finally:
            await conn.close()
    except postgres_errors() as exc:  # the row says why, and it is a PROBLEM (projection_problem)
        row["error"] = f"position unknown: {type(exc).__name__}: {exc}"[:200]
        return row
    reports = [r for r in services if r.get("service") == "audit"]
    progress = max((r.get("audit_progress_at") or 0 for r in reports), default=0)
    row["behind"] = max(0, last_seq - row["head_seq"])
    row["advanced_s"] = round(time.time() - progress, 1) if progress else None
    row["error"] = next((r["audit_error"] for r in reports if r.get("audit_error")), None)
    row["projector_running"] = bool(reports)
    return row


def projection_problem(row: dict[str, Any], stall_s: float, max_lag: int) -> str | None:
    name, head, last = row["projection"], row.get("head_seq"), row["last_seq"]
    if head is None:
        return f"projection {name}: {row.get('error')}"
    behind = row["behind"]
    why = f" (last error: {row['error']})" if row.get("error") else ""
    if behind > max_lag:
        return f"projection {name} is behind: at seq {head} of {last} ({behind} messages){why}"
    if behind and not row["projector_running"]:
        return f"projection {name} is stalled: at seq {head} of {last}, and no audit service is running"
    advanced = row.get("advanced_s")
    if behind and (advanced is None or advanced >= stall_s or row.get("error")):
        since = "never" if advanced is None else f"for {advanced:.0f}s"
        return f"projection {name} is stalled: at seq {head} of {last}, not advanced {since}{why}"
    return None


def service_problems(services: list[dict[str, Any]]) -> list[str]:
    """A service whose heartbeat says it is not ok, or whose heartbeat is old."""
    found = []
    for r in services:
        errors = {k: v for k, v in r.items() if k.endswith("_error") and v}
        if r.get("status") != "ok" or errors:
            detail = "; ".join(f"{k}: {v}" for k, v in errors.items()) or str(r.get("status"))
            found.append(f"service {r.get('service')} ({r.get('instance')}) is {r.get('status')}: {detail}")
        elif r.get("age_s", 0) > 20:
            found.append(f"service {r.get('service')} ({r.get('instance')}) last reported {r['age_s']:.0f}s ago")
    return found


def missing_services(services: list[dict[str, Any]], expected: list[str]) -> list[str]:
    """A service the runtime here runs (``expected``, from its ``runtime.json``) that no instance
    reports for: crashed and not yet restarted, or restarting in a loop."""
    reporting = {r.get("service") for r in services}
    return [
        f"service {name} is not reporting (the `agentos up` here runs it): crashed, restarting, or stuck starting"
        for name in expected
        if name not in reporting
    ]


async def judge(
    report: dict[str, Any], *, database_url: str | None, schema: str, stall_s: float = STALL_S, max_lag: int = MAX_LAG
) -> None:
    """Add the Postgres line, the projection and every problem found to a collected ``report``."""
    report["dependencies"].append(await postgres(database_url))
    last = next((s["last_seq"] for s in report["streams"] if s["stream"] == "AGENTOS_EVENTS"), 0)
    problems = [f"{d['dependency']} is unreachable: {d['detail']}" for d in report["dependencies"] if not d["ok"]]
    problems += [p for c in report["consumers"] if (p := consumer_problem(c, stall_s))]
    found = await projection(database_url, schema, last, report["services"])
    if found is not None:
        report["projections"].append(found)
    problems += [p for r in report["projections"] if (p := projection_problem(r, stall_s, max_lag))]
    if report.get("services_unreadable"):
        problems.append(f"the services' health records could not be read: {report['services_unreadable']}")
    problems += service_problems(report["services"])
    report["problems"] = problems


__all__ = [
    "MAX_LAG",
    "STALL_S",
    "consumer_problem",
    "consumer_row",
    "judge",
    "missing_services",
    "nats",
    "postgres",
    "postgres_errors",
    "projection",
    "projection_problem",
    "service_problems",
]
