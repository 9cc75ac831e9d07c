"""One MCP server's connection, through the official SDK's client (``mcp.Client``).

The server is started (stdio) or connected (HTTP) on first use, with its secrets put into its
environment or headers only here; the protocol revision is negotiated by the SDK (``2026-07-28``
through ``server/discover``, else the ``2025-11-25`` handshake). A call is bounded by the
connector's timeout, concurrency and rate limit; a call that times out or is cancelled is
abandoned with ``notifications/cancelled`` (the SDK's own), and a server that dies mid-call fails
the call at once. Consecutive failures open a circuit breaker: calls then fail immediately until
it half-opens. A crashed server is started again on the next use after a backoff; an idle one is
stopped; a live one is probed every ``health_every_s``. Tool-list changes (the legacy
notification or a ``subscriptions/listen`` stream) only mark the listing stale: it is re-read on
the next offer, at most once per ``relist_min_s``, so a flood costs nothing.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import mcp_types as types
from agentos_kernel.exceptions import Failed, Unavailable
from agentos_kernel.faults import contained
from agentos_kernel.retry import Backoff
from agentos_kernel.secrets import SecretStore
from agentos_kernel.tasks import cancel_and_wait
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.client.subscriptions import ListenNotSupportedError
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError

from agentos_specialist.connectors.spec import Connector, SecretRef, Value

PROTOCOLS = ("2025-11-25", "2026-07-28")
"""The MCP revisions AgentOS speaks; a server that negotiates an older one is refused."""
RESTART = Backoff(first_s=0.2, cap_s=5.0)


class ConnectorFailed(Failed):
    """A call of a connector's tool failed (the server crashed, timed out or broke its contract)."""


class ConnectorDegraded(Unavailable):
    """The connector's circuit breaker is open: its calls fail at once for now."""


def _command(name: str) -> str:
    """A bare command is looked up on ``PATH``, then beside the Python running AgentOS (a
    virtualenv's ``bin``, where ``pip install mcp-server-time`` puts it, active or not)."""
    if os.sep in name or shutil.which(name) is not None:
        return name
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else name


def _resolve(values: dict[str, Value], store: SecretStore) -> dict[str, str]:
    return {k: (v.prefix + store.get(v.secret) if isinstance(v, SecretRef) else v) for k, v in values.items()}


class McpServer:
    """The live connection to one connector's server (started lazily, restarted, stopped when idle)."""

    def __init__(
        self,
        spec: Connector,
        on_degraded: Callable[[str, int, float], Awaitable[None]] | None = None,
        store: SecretStore | None = None,
    ) -> None:
        self.spec = spec
        self.limits = spec.limits
        self._on_degraded = on_degraded
        self._store = store
        self.client: Client | None = None
        self._runner: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._lock = asyncio.Lock()
        self._listing_lock = asyncio.Lock()
        self._slots = asyncio.Semaphore(self.limits.concurrency)
        self._started: deque[float] = deque()
        self.failures = 0
        self.restarts = 0
        self.open_until = 0.0
        self.last_error = ""
        self.last_used = time.monotonic()
        self.stale = True
        self.changes = 0
        """Tool-list change notifications received (a flood shows here, not in the relists)."""
        self.relists = 0
        self._relisted_at = 0.0
        self._listing: list[types.Tool] = []
        self._inflight = 0
        self._watch: asyncio.Task[None] | None = None

    # -- lifecycle ----------------------------------------------------------------------------------
    def _target(self) -> Any:
        store = self._store or SecretStore.default()
        if self.spec.stdio is not None:
            s = self.spec.stdio
            return StdioServerParameters(
                command=_command(s.command), args=list(s.args), env=_resolve(s.env, store), cwd=s.cwd
            )
        assert self.spec.http is not None
        headers = _resolve(self.spec.http.headers, store)
        return streamable_http_client(self.spec.http.url, http_client=create_mcp_http_client(headers=headers))

    async def _handle(self, message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            self._changed()

    def _changed(self) -> None:
        self.changes += 1
        self.stale = True

    async def _run(self, ready: asyncio.Future[None]) -> None:
        client = Client(self._target(), mode="auto", message_handler=self._handle, cache=None)
        async with client:
            if client.protocol_version not in PROTOCOLS:
                raise ConnectorFailed(
                    f"connector {self.spec.name!r}: the server speaks MCP {client.protocol_version}, "
                    f"not one of {', '.join(PROTOCOLS)}"
                )
            self.client = client
            ready.set_result(None)
            caps = client.server_capabilities.tools
            listening = None
            if client.protocol_version == "2026-07-28" and caps is not None and caps.list_changed:
                listening = asyncio.ensure_future(self._listen(client))
            try:
                await self._stop.wait()
            finally:  # a stop ends the listening too, at once (not after stop()'s grace period)
                await cancel_and_wait(listening, timeout=5)

    async def _listen(self, client: Client) -> None:
        """Tool-list changes over a ``subscriptions/listen`` stream (2026-07-28), until stopped."""
        with contained("listen for an MCP server's tool-list changes", MCPError, ListenNotSupportedError):
            async with client.listen(tools_list_changed=True) as sub:
                async for _ in sub:
                    self._changed()

    async def _start(self) -> None:
        if self.restarts:
            await asyncio.sleep(RESTART.delay(self.restarts - 1))
        self._stop = asyncio.Event()
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._runner = asyncio.create_task(self._guarded(ready), name=f"mcp:{self.spec.name}")
        try:
            await asyncio.wait_for(asyncio.shield(ready), self.limits.connect_timeout_s)
        except TimeoutError:
            await cancel_and_wait(self._runner, timeout=5)
            raise ConnectorFailed(
                f"connector {self.spec.name!r}: no session within {self.limits.connect_timeout_s:g}s"
            ) from None
        self.stale = True
        self._listing = []  # a new process's tools are read afresh (relist_min_s paces a live server's changes)
        if self._watch is None or self._watch.done():
            self._watch = asyncio.create_task(self._watchdog(), name=f"mcp-watch:{self.spec.name}")

    async def _guarded(self, ready: asyncio.Future[None]) -> None:
        try:
            await self._run(ready)
        except BaseException as exc:  # the server ended (crashed, refused, stopped): recorded here
            self.last_error = _describe(exc)
            if not ready.done():
                ready.set_exception(ConnectorFailed(f"connector {self.spec.name!r} did not start: {self.last_error}"))
            if not isinstance(exc, asyncio.CancelledError | Exception):
                raise
        finally:
            self.client = None
            self.restarts += 1

    def alive(self) -> bool:
        return self.client is not None and self._runner is not None and not self._runner.done()

    async def ensure(self) -> Client:
        """The live client, starting the server if it is not running; fails at once while degraded."""
        now = time.monotonic()
        if now < self.open_until:
            raise ConnectorDegraded(
                f"connector {self.spec.name!r}",
                f"circuit open after {self.failures} failures: {self.last_error}",
                retry_after_s=self.open_until - now,
            )
        async with self._lock:
            if not self.alive():
                try:
                    await self._start()
                except ConnectorFailed as exc:
                    await self.failed(str(exc))
                    raise
            assert self.client is not None
            return self.client

    async def stop(self) -> None:
        self._stop.set()
        if self._runner is not None and not self._runner.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._runner), 3.0)
            except (TimeoutError, Exception):  # noqa: BLE001  (boundary: stopping, whatever the server did)
                await cancel_and_wait(self._runner, timeout=5)
        self.restarts = 0  # a planned stop is not a crash: the next start does not back off

    async def close(self) -> None:
        await cancel_and_wait(self._watch, timeout=5)
        await self.stop()

    async def _watchdog(self) -> None:
        """Stop the server once idle; probe it while it runs (a probe that fails counts as a failure)."""
        every = min(self.limits.idle_stop_s, self.limits.health_every_s) / 2
        while True:
            await asyncio.sleep(every)
            if not self.alive():
                continue
            if self._inflight == 0 and time.monotonic() - self.last_used > self.limits.idle_stop_s:
                await self.stop()
                continue
            with contained("probe an MCP server's health"):
                await self.probe()

    async def probe(self) -> bool:
        """List the tools with a timeout: False (and a failure counted, the server restarted) if it fails."""
        client = self.client
        if client is None:
            return False
        try:
            await asyncio.wait_for(client.list_tools(cache_mode="refresh"), self.limits.call_timeout_s)
        except Exception as exc:  # noqa: BLE001  (boundary: any failed probe is an unhealthy server)
            await self.failed(f"health probe failed: {_describe(exc)}")
            await self.stop()
            self.restarts = max(self.restarts, 1)
            return False
        return True

    # -- failures -------------------------------------------------------------------------------------
    async def failed(self, reason: str) -> None:
        self.failures += 1
        self.last_error = reason
        if self.failures >= self.limits.breaker_failures and time.monotonic() >= self.open_until:
            self.open_until = time.monotonic() + self.limits.breaker_reset_s
            if self._on_degraded is not None:
                with contained("announce a degraded connector"):
                    await self._on_degraded(reason, self.failures, self.limits.breaker_reset_s)

    def succeeded(self) -> None:
        self.failures = 0
        self.open_until = 0.0

    # -- use ------------------------------------------------------------------------------------------
    async def tools(self) -> list[types.Tool]:
        """The server's tools, re-read when a change was announced (at most once per ``relist_min_s``)."""
        client = await self.ensure()
        self.last_used = time.monotonic()
        async with self._listing_lock:  # concurrent offers share one re-read
            due = time.monotonic() - self._relisted_at >= self.limits.relist_min_s
            if self.stale and (due or not self._listing):
                self._relisted_at = time.monotonic()
                self.relists += 1
                self._listing = await self._bounded(self._list_all(client), "list its tools")
                self.stale = False
        return self._listing

    async def _list_all(self, client: Client) -> list[types.Tool]:
        found: list[types.Tool] = []
        cursor: str | None = None
        for _ in range(50):
            page = await client.list_tools(cursor=cursor, cache_mode="refresh")
            found += page.tools
            cursor = page.next_cursor
            if cursor is None:
                break
        return found

    async def _rate_slot(self) -> None:
        limit = self.limits.rate_per_minute
        if limit is None:
            return
        while True:
            now = time.monotonic()
            while self._started and now - self._started[0] > 60:
                self._started.popleft()
            if len(self._started) < limit:
                self._started.append(now)
                return
            await asyncio.sleep(60 - (now - self._started[0]))

    async def call(
        self, name: str, arguments: dict[str, Any], meta: types.RequestParamsMeta | None = None
    ) -> types.CallToolResult:
        """Call tool ``name`` within the connector's limits; raises :class:`ConnectorFailed` (or
        :class:`ConnectorDegraded`) rather than hang."""
        client = await self.ensure()
        self._inflight += 1
        self.last_used = time.monotonic()
        try:
            async with self._slots:
                await asyncio.wait_for(self._rate_slot(), self.limits.call_timeout_s)
                clock = _Clock(self.limits.call_timeout_s, self.limits.max_call_s)
                work = client.call_tool(name, arguments, progress_callback=clock.progress, meta=meta)
                result = await self._bounded(work, f"call {name!r}", clock)
        finally:
            self._inflight -= 1
            self.last_used = time.monotonic()
        self.succeeded()
        return result

    async def list_resources(self) -> list[types.Resource]:
        """Every resource the server lists (all pages)."""
        client = await self.ensure()
        found: list[types.Resource] = []
        cursor: str | None = None
        while True:
            page = await self._bounded(client.list_resources(cursor=cursor), "list resources")
            found += page.resources
            cursor = page.next_cursor
            if not cursor:
                break
        self.succeeded()
        return found

    async def read_resource(self, uri: str) -> types.ReadResourceResult:
        client = await self.ensure()
        result = await self._bounded(client.read_resource(uri), f"read {uri!r}")
        self.succeeded()
        return result

    async def _bounded(self, work: Awaitable[Any], what: str, clock: _Clock | None = None) -> Any:
        """``work`` raced against the timeout (started again by each progress notification, when
        ``clock`` hears them) and the server's death: a failure is counted and raised."""
        task = asyncio.ensure_future(work)
        runner = self._runner
        waiting: set[asyncio.Future[Any]] = {task} if runner is None else {task, runner}
        clock = clock or _Clock(self.limits.call_timeout_s, self.limits.call_timeout_s)
        try:
            done: set[asyncio.Future[Any]] = set()
            while not done and (left := clock.left()) > 0:
                done, _ = await asyncio.wait(waiting, timeout=left, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the task was cancelled (halted, timed out): so is its call
            task.cancel()
            raise
        if task in done:
            try:
                return task.result()
            except RuntimeError as exc:  # the SDK's outputSchema check: the server broke its contract
                reason = f"connector {self.spec.name!r}: {what}: the result violates the tool's outputSchema: {exc}"
                raise ConnectorFailed(reason[:600]) from None
            except Exception as exc:  # noqa: BLE001  (boundary: any failure of the server is the call's failure)
                reason = f"connector {self.spec.name!r}: {what} failed: {_describe(exc)}"
                await self.failed(reason)
                if isinstance(exc, MCPError) and "closed" in str(exc).lower():
                    await self.stop()  # the connection is gone: the next use starts the server again
                    self.restarts = max(self.restarts, 1)
                raise ConnectorFailed(reason) from None
        await cancel_and_wait(task, timeout=5)  # the SDK sends notifications/cancelled for it
        if runner is not None and runner in done:
            reason = f"connector {self.spec.name!r}: the server ended during {what}: {self.last_error or 'exited'}"
        else:
            reason = f"connector {self.spec.name!r}: {what} timed out after {clock.timed_out()}"
        await self.failed(reason)
        raise ConnectorFailed(reason)


class _Clock:
    """A call's deadline: ``idle_s`` after it started or after its last progress notification,
    never later than ``max_s`` after it started."""

    def __init__(self, idle_s: float, max_s: float) -> None:
        self.idle_s, self.started = idle_s, time.monotonic()
        self.last = self.started
        self.end = self.started + max(max_s, idle_s)
        self.notes = 0

    async def progress(self, progress: float, total: float | None, message: str | None) -> None:
        """The SDK's progress callback: the server is still at work."""
        self.last, self.notes = time.monotonic(), self.notes + 1

    def left(self) -> float:
        return min(self.last + self.idle_s, self.end) - time.monotonic()

    def timed_out(self) -> str:
        ran = time.monotonic() - self.started
        if self.notes == 0:
            return f"{self.idle_s:g}s"
        return f"{ran:.0f}s ({self.notes} progress notifications; at most {self.end - self.started:g}s)"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        inner: list[BaseException] = list(exc.exceptions)  # pyright: ignore[reportUnknownMemberType, reportUnknownArgumentType]
        return "; ".join(_describe(e) for e in inner)[:300] or type(exc).__name__
    return f"{type(exc).__name__}: {exc}"[:300]
