"""`agentos up`: embedded servers (unless configured), then every service as a supervised child.

The embedded servers are supervised too: a nats-server or Postgres that dies is started again on
the same store or data directory (NATS on the same port), and the services reconnect to it.

With the embedded NATS server and ``AGENTOS_NATS_AUTH`` on (the default), each child connects as
its own NATS user with least-privilege permissions (``agentos_kernel.grants.SERVICE_USES``),
passed to it in ``AGENTOS_NATS_USER``/``AGENTOS_NATS_PASSWORD``; the streams and buckets are
provisioned once by the admin before the children start, so they run with ``AGENTOS_PROVISION=off``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import IO, Any

import asyncpg
from agentos_kernel import Bus, BusUnavailable, KernelSettings, connect_nats
from agentos_kernel.embedded import EmbeddedNats, EmbeddedPostgres
from agentos_kernel.exceptions import ConfigError
from agentos_kernel.grants import ADMIN
from agentos_kernel.retry import Backoff
from agentos_kernel.runtime import read_runtime, write_runtime
from agentos_kernel.service import SUPERVISOR_ENV
from agentos_kernel.tasks import cancel_and_wait
from pydantic import SecretStr
from rich.console import Console

from agentos_cli.health import postgres_errors

#: Pauses before a service that exited is started again (reset once one ran for 30 s).
RESTART = Backoff(first_s=0.5, cap_s=30.0)
_COLOURS = ["cyan", "magenta", "green", "yellow", "blue", "red", "bright_cyan"]


async def check_configured(settings: KernelSettings) -> None:
    """Fail with one clear line when a configured server cannot be reached."""
    if settings.nats_url:
        try:
            nc = await connect_nats(settings.nats_url, name="agentos-check", timeout=3.0)
        except BusUnavailable as exc:
            raise ConfigError(f"{exc}. Start that server, or unset AGENTOS_NATS_URL to use an embedded one.") from None
        await nc.close()
    if settings.database_url:
        try:
            conn = await asyncpg.connect(settings.database_url, timeout=3.0)
        except postgres_errors() as exc:
            raise ConfigError(
                f"cannot reach Postgres at {settings.database_url!r}: {exc or type(exc).__name__}. "
                "Start it, or unset AGENTOS_DATABASE_URL to use an embedded one."
            ) from None
        await conn.close()


def start_offline_model() -> Any:
    """The shipped deterministic model over the OpenAI HTTP API, playing the demo scenario
    (or the file named by AGENTOS_OFFLINE_SCENARIO)."""
    from importlib import resources

    from agentos_offline_model import OfflineModelServer, Scenario

    path = os.environ.get("AGENTOS_OFFLINE_SCENARIO") or str(
        resources.files("agentos_offline_model") / "scenarios" / "demo.yaml"
    )
    return OfflineModelServer(Scenario.load(path)).start()


class Runtime:
    """The embedded servers plus supervised service processes, started and stopped as one."""

    def __init__(
        self, settings: KernelSettings, services: list[str], *, logs: Path | None = None, console: Console | None = None
    ) -> None:
        self.settings = settings
        self.services = services
        self.logs = logs
        self.console = console or Console(stderr=True)
        self.nats: EmbeddedNats | None = None
        self.pg: EmbeddedPostgres | None = None
        self.children: dict[str, asyncio.subprocess.Process] = {}
        self.offline: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._lock_fd: int | None = None
        self._runtime_file: Path | None = None
        """The ``runtime.json`` this runtime wrote (the only one its stop may remove)."""

    async def start(self) -> KernelSettings:
        running = read_runtime(self.settings)
        if running and running.get("pid") != os.getpid():
            raise _already_running(self.settings.state_dir, running)
        await check_configured(self.settings)
        state = self.settings.state_dir.resolve()
        state.mkdir(parents=True, exist_ok=True)
        self._lock_state(state)
        nats_url, db_url = self.settings.nats_url, self.settings.database_url
        admin: dict[str, Any] = {}
        if not nats_url:
            self.nats = EmbeddedNats(state / "nats", sync=self.settings.nats_sync, auth=self.settings.nats_auth)
            nats_url = await asyncio.to_thread(self.nats.start)
            if self.nats.credentials:
                admin = {"nats_user": ADMIN, "nats_password": SecretStr(self.nats.credentials[ADMIN]["password"])}
        if not db_url:
            self.pg = EmbeddedPostgres(state / "postgres")
            db_url = await asyncio.to_thread(self.pg.start)
        self.settings = self.settings.model_copy(
            update={"nats_url": nats_url, "database_url": db_url, "state_dir": state, **admin}
        )
        if not os.environ.get("AGENTOS_MODELS"):
            self.offline = await asyncio.to_thread(start_offline_model)
        bus = await Bus.connect(self.settings, source="cli")
        await bus.provision()
        await bus.close()
        self._runtime_file = write_runtime(self.settings, self._runtime_record(nats_auth=bool(admin)))
        for i, name in enumerate(self.services):
            self._tasks.append(asyncio.create_task(self._supervise(name, _COLOURS[i % len(_COLOURS)])))
        if self.nats is not None or self.pg is not None:
            self._tasks.append(asyncio.create_task(self._keep_servers()))
        return self.settings

    def _runtime_record(self, *, nats_auth: bool) -> dict[str, Any]:
        """What ``runtime.json`` tells the other commands about this started runtime: its process,
        servers, services and offline model (:func:`agentos_kernel.runtime.read_runtime` reads it)."""
        state = self.settings.state_dir
        return {
            "pid": os.getpid(),
            "nats_url": self.settings.nats_url,
            "database_url": self.settings.database_url,
            "embedded": {"nats": self.nats is not None, "postgres": self.pg is not None},
            "nats_sync": self.settings.nats_sync if self.nats else "server-configured",
            "services": self.services,
            "started": time.time(),
            "offline_model_url": self.offline.url if self.offline else None,
            "nats_auth": nats_auth,
            "nats_admin_credentials": str(state / "nats" / "admin.json") if nats_auth else None,
        }

    async def _keep_servers(self, every_s: float = 1.0) -> None:
        """Start an embedded server that died again, on the same store or data directory (and the
        same NATS port): the services reconnect to it by themselves."""
        while not self._stopping:
            await asyncio.sleep(every_s)
            for name, server in (("nats-server", self.nats), ("Postgres", self.pg)):
                if server is None or self._stopping or server.alive():
                    continue
                self.console.print(f"[bold red]embedded {name} is not running; starting it again on {server.root}[/]")
                # Whatever a start raises (still starting, its port taken, the package's own errors),
                # the supervisor prints it and tries again next round: it must outlive any of them.
                try:
                    await asyncio.to_thread(server.start)
                except Exception as exc:  # noqa: BLE001  (boundary: printed, retried next round)
                    self.console.print(f"[bold red]embedded {name} did not start again: {exc}[/]")
                else:
                    self.console.print(f"embedded {name} is running again")

    def _lock_state(self, state: Path) -> None:
        """Hold an exclusive lock on the state directory while this runtime lives (the OS drops it
        when the process ends, however it ends). A second ``agentos up`` on the same directory is
        refused even before ``runtime.json`` is written, so it can never take this runtime's
        servers for ones that a killed run left behind, and stop them."""
        if self._lock_fd is not None:
            return
        fd = os.open(state / "runtime.lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise _already_running(state, read_runtime(self.settings) or {}) from None
        self._lock_fd = fd

    def _env(self, name: str) -> dict[str, str]:
        env = dict(os.environ)
        if self.nats is not None and self.nats.credentials:
            env.update(
                {
                    "AGENTOS_NATS_USER": name,
                    "AGENTOS_PROVISION": "off",
                    "AGENTOS_NATS_PASSWORD": self.nats.credentials.get(name, {}).get("password", ""),
                }
            )
        env.update(
            {
                "AGENTOS_NATS_URL": self.settings.nats_url or "",
                "AGENTOS_DATABASE_URL": self.settings.database_url or "",
                "AGENTOS_STATE_DIR": str(self.settings.state_dir),
                SUPERVISOR_ENV: str(os.getpid()),  # a service stops itself if this process is killed
                "PYTHONUNBUFFERED": "1",
            }
        )
        if self.offline is not None:
            env["AGENTOS_OFFLINE_MODEL_URL"] = self.offline.url
        return env

    async def _supervise(self, name: str, colour: str) -> None:
        failures = 0  # in a row: a service that ran 30 s before exiting starts the count again
        while not self._stopping:
            started = time.monotonic()
            out: IO[str] | None = None
            if self.logs is not None:
                self.logs.mkdir(parents=True, exist_ok=True)
                out = open(self.logs / f"{name}.log", "a")  # noqa: SIM115  (the child's stdout; closed below)
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "agentos_cli",
                "service",
                name,
                env=self._env(name),
                stdout=out or asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
            self.children[name] = proc
            if out is None and proc.stdout is not None:
                await self._relay(name, colour, proc.stdout)
            code = await proc.wait()
            if out is not None:
                out.close()
            if self._stopping:
                return
            failures = 0 if time.monotonic() - started > 30 else failures + 1
            delay = RESTART.delay(failures)
            self.console.print(f"[{colour}]{name:>15}[/] exited with {code}; restarting in {delay:.1f}s")
            await asyncio.sleep(delay)

    async def _relay(self, name: str, colour: str, stream: asyncio.StreamReader) -> None:
        async for line in stream:
            self.console.print(
                f"[{colour}]{name:>15}[/] {line.decode(errors='replace').rstrip()}", markup=True, highlight=False
            )

    async def restart(self, name: str) -> None:
        """Kill one service (SIGKILL); the supervisor starts it again."""
        proc = self.children.get(name)
        if proc and proc.returncode is None:
            proc.kill()

    async def stop(self) -> None:
        self._stopping = True
        for proc in self.children.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        for proc in self.children.values():
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
        await asyncio.gather(*(cancel_and_wait(task) for task in self._tasks))
        if self.offline is not None:
            await asyncio.to_thread(self.offline.stop)
        if self.pg is not None:
            await asyncio.to_thread(self.pg.stop)
        if self.nats is not None:
            await asyncio.to_thread(self.nats.stop)
        self._forget_runtime_file()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the state directory's lock
            self._lock_fd = None

    def _forget_runtime_file(self) -> None:
        """Remove ``runtime.json`` only if this runtime wrote it and it still names this process: a
        start refused because another runtime lives here must leave that runtime's file alone."""
        path, self._runtime_file = self._runtime_file, None
        if path is None:
            return
        with contextlib.suppress(OSError, ValueError):
            if json.loads(path.read_text()).get("pid") == os.getpid():
                path.unlink()


def _already_running(state: Path, running: dict[str, Any]) -> ConfigError:
    return ConfigError(
        f"AgentOS is already running from {state} (pid {running.get('pid', '?')}); "
        "stop it first or use another AGENTOS_STATE_DIR"
    )


async def run_up(settings: KernelSettings, services: list[str], console: Console) -> None:
    runtime = Runtime(settings, services, console=console)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        resolved = await runtime.start()
        embedded = [k for k, v in (("NATS", runtime.nats), ("Postgres", runtime.pg)) if v]
        console.print(f"[bold green]AgentOS is up[/] (state: {resolved.state_dir})")
        console.print(
            f"  NATS      {resolved.nats_url}"
            + (f"  [dim](embedded, fsync: {resolved.nats_sync})[/]" if runtime.nats else "")
        )
        console.print(f"  Postgres  {resolved.database_url}" + ("  [dim](embedded)[/]" if runtime.pg else ""))
        console.print(f"  services  {', '.join(services) or '(none installed)'}")
        if runtime.offline is not None:
            console.print(
                f"  [bold yellow]models    OFFLINE deterministic model at {runtime.offline.url}[/] "
                "(no API key used; set AGENTOS_MODELS to a model registry file for real models)"
            )
        if embedded:
            console.print(f"  [dim]embedded: {', '.join(embedded)}; data is kept in {resolved.state_dir}[/]")
        console.print("  Ctrl-C stops everything.  Try `agentos status` and `agentos tail` in another terminal.")
        await stop.wait()
        console.print("stopping …")
    finally:
        await runtime.stop()
