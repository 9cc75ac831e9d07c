"""How the `agentos audit …` commands reach the running AgentOS: its settings, the projection's
Postgres pool and the log's bus, and how they run (an error is one line and exit code 2).

Kept free of heavy imports like the commands themselves: the kernel, asyncpg and the audit
service are imported when a command runs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from agentos_cli.connect import run
from agentos_cli.errors import fail

if TYPE_CHECKING:
    import asyncpg
    from agentos_kernel import Bus, KernelSettings

T = TypeVar("T")


def kernel_settings() -> KernelSettings:
    """The settings of the AgentOS running here (or configured); an error when it has no database."""
    from agentos_kernel import AgentOSError, KernelSettings
    from agentos_kernel.runtime import resolve

    settings = resolve(KernelSettings())
    if not settings.database_url:
        raise AgentOSError("no AgentOS is running here: start one with `agentos up` (or set AGENTOS_DATABASE_URL)")
    return settings


def run_command(coro: Coroutine[Any, Any, T]) -> T:
    """Run an audit command: :func:`agentos_cli.connect.run`, with bad filters, a missing
    projection table and file errors also ending as one line."""
    import asyncpg

    return run(coro, ValueError, asyncpg.UndefinedTableError, OSError)  # OSError: e.g. --out


def parse_time(text: str | None) -> Any:
    """A --since/--until option as a time (see :func:`agentos_audit.queries.parse_when`); a bad one
    ends the command."""
    from agentos_audit import queries as q

    try:
        return q.parse_when(text)
    except ValueError as exc:
        fail(exc)


def schema_name(schema: str | None) -> str:
    """The projection schema: the one given, else AGENTOS_AUDIT_SCHEMA_NAME (default ``audit``)."""
    from agentos_audit.settings import AuditSettings

    return schema or AuditSettings().schema_name


async def with_pool(work: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
    """Run ``work`` with a pool on the projection's database, closed afterwards."""
    from agentos_kernel.db import create_pool

    # The audit projection holds the log's bytes as they are (redacted on publish).
    pool = await create_pool(kernel_settings().database_url, min_size=1, max_size=4, redact=False)
    try:
        return await work(pool)
    finally:
        await pool.close()


async def with_bus_and_pool(work: Callable[[Bus, asyncpg.Pool], Awaitable[T]]) -> T:
    """Run ``work`` with a bus on the log and a pool on the projection, both closed afterwards."""
    from agentos_kernel import AgentOSError, Bus

    settings = kernel_settings()
    if not settings.nats_url:
        raise AgentOSError("no NATS here: start AgentOS with `agentos up` (or set AGENTOS_NATS_URL)")
    bus = await Bus.connect(settings, source="cli-audit")
    try:
        return await with_pool(lambda pool: work(bus, pool))
    finally:
        await bus.close()


__all__ = ["kernel_settings", "parse_time", "run_command", "schema_name", "with_bus_and_pool", "with_pool"]
