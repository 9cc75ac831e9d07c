"""The gateway's worker processes: more cores for HTTP ingress on one host.

With ``AGENTOS_GATEWAY_WORKERS=N`` the gateway service binds its port with ``SO_REUSEPORT`` and
starts N-1 more processes (``python -m agentos_gateway``) that bind the same port, so the kernel
spreads incoming connections over N processes. Each worker is a whole gateway with its own NATS
connection; like replicas, they share state only through NATS (webhook replay records,
idempotency records, data-subject keys, JetStream dedup), so a request is handled the same
whichever process takes it. Schedules and KPI rules run in the first process only.

The first process supervises its workers: one that exits is started again (with backoff), and
all are stopped (SIGTERM, then SIGKILL after the grace period) when the service stops. A worker
whose first process is gone stops itself (``AGENTOS_SUPERVISOR_PID``, as for every service).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time

from agentos_kernel.retry import Backoff
from agentos_kernel.service import SUPERVISOR_ENV
from agentos_kernel.settings import KernelSettings
from agentos_kernel.tasks import cancel_and_wait

log = logging.getLogger("agentos.gateway.workers")
#: Pauses before a worker that exited is started again (reset once one ran for 30 s).
RESTART = Backoff(first_s=0.5, cap_s=10.0)


def kernel_env(settings: KernelSettings) -> dict[str, str]:
    """The kernel settings as ``AGENTOS_*`` variables (what a worker needs to be this process's twin)."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[f"AGENTOS_{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


class Workers:
    """N-1 supervised worker processes serving ``host:port`` next to this one."""

    def __init__(self, count: int, host: str, port: int, settings: KernelSettings, *, grace_s: float = 10.0) -> None:
        self.count, self.host, self.port = count, host, port
        self.settings = settings
        self.grace_s = grace_s
        self.procs: list[asyncio.subprocess.Process | None] = [None] * count
        self.restarts = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    def env(self) -> dict[str, str]:
        env = {**os.environ, **kernel_env(self.settings)}
        env.update(
            {
                "AGENTOS_PROVISION": "off",  # this process provisioned already
                "AGENTOS_GATEWAY_HOST": self.host,
                "AGENTOS_GATEWAY_PORT": str(self.port),
                "AGENTOS_GATEWAY_WORKERS": "1",
                "AGENTOS_GATEWAY_WORKER_OF": str(os.getpid()),
                SUPERVISOR_ENV: str(os.getpid()),  # a worker stops when this process is gone
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env

    async def start(self) -> Workers:
        self._tasks = [
            asyncio.create_task(self._supervise(i), name=f"gateway-worker-{i + 1}") for i in range(self.count)
        ]
        return self

    async def _supervise(self, index: int) -> None:
        failures = 0  # in a row: a worker that ran 30 s before exiting starts the count again
        while not self._stopping:
            started = time.monotonic()
            proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "agentos_gateway", env=self.env())
            self.procs[index] = proc
            code = await proc.wait()
            if self._stopping:
                return
            self.restarts += 1
            failures = 0 if time.monotonic() - started > 30 else failures + 1
            delay = RESTART.delay(failures)
            log.warning("gateway worker %d exited with %s; starting it again in %.1fs", index + 1, code, delay)
            await asyncio.sleep(delay)

    @property
    def pids(self) -> list[int]:
        """The running workers' pids."""
        return [p.pid for p in self.procs if p is not None and p.returncode is None]

    async def stop(self) -> None:
        """SIGTERM every worker (each finishes its requests in flight), SIGKILL what outlives the grace."""
        self._stopping = True
        running = [p for p in self.procs if p is not None and p.returncode is None]
        for proc in running:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        if running:
            waits = [asyncio.ensure_future(p.wait()) for p in running]
            _, late = await asyncio.wait(waits, timeout=self.grace_s)
            for proc in running:
                if proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
            if late:
                await asyncio.wait(late, timeout=5)
        await asyncio.gather(*(cancel_and_wait(task) for task in self._tasks))


__all__ = ["Workers", "kernel_env"]
