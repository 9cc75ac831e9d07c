"""Serving the gateway's ASGI app with uvicorn, as a task in the running event loop.

The socket is bound before uvicorn starts, so ``port=0`` gets a free port the OS picks and
:attr:`GatewayServer.url` is known at once. With ``reuse_port`` it is bound with ``SO_REUSEPORT``,
so the gateway's worker processes (``AGENTOS_GATEWAY_WORKERS``) can listen on the same port.
uvicorn's own signal handling is switched off: the service owns SIGTERM/SIGINT and stops the
server, then the bus, in order.

The gateway's app is served behind :mod:`agentos_gateway.fastpath` (the hot ingest routes
without FastAPI's per-request work); ``fast_path=False`` serves the FastAPI app alone. On stop,
the gateway's background work (webhook replay records) is finished before returning.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn
from agentos_kernel.faults import FAULTS
from agentos_kernel.tasks import cancel_and_wait

from agentos_gateway.fastpath import with_fast_path


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class GatewayServer:
    """uvicorn serving ``app`` on ``host:port`` in the current event loop."""

    def __init__(
        self,
        app: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        log_level: str = "warning",
        startup_timeout_s: float = 10.0,
        fast_path: bool = True,
        reuse_port: bool = False,
    ) -> None:
        self.app = with_fast_path(app) if fast_path else app
        self.gateway = getattr(getattr(app, "state", None), "gateway", None)
        self.mcp = getattr(getattr(app, "state", None), "mcp", None)  # /mcp's session manager, if started
        self.host = host
        self.requested_port = port
        self.log_level = log_level
        self.startup_timeout_s = startup_timeout_s
        self.reuse_port = reuse_port
        self.port: int | None = None
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` (a wildcard host is shown as the loopback address)."""
        if self.port is None:
            raise RuntimeError("the gateway server is not started")
        host = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(self.host, self.host)
        return f"http://{host}:{self.port}"

    def _bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on sockets that say they are TCP,
        # and without it every response waits ~40 ms for the client's delayed ACK (Nagle).
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.reuse_port:  # worker processes listen on the same port; the kernel spreads connections
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((self.host, self.requested_port))
        sock.set_inheritable(True)
        self.port = sock.getsockname()[1]
        return sock

    async def start(self) -> GatewayServer:
        """Bind, start serving, and return once uvicorn accepts connections."""
        sock = self._bind()
        # Keep-alive above uvicorn's 5 s: clients and load balancers reuse idle connections, and a
        # server that closes them first makes a client's next POST fail on a dead socket.
        config = uvicorn.Config(
            self.app,
            lifespan="off",
            log_level=self.log_level,
            access_log=False,
            timeout_graceful_shutdown=5,
            timeout_keep_alive=75,
            server_header=False,
        )
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name=f"gateway-http:{self.port}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.startup_timeout_s
        while not self._server.started:
            if self._task.done() or loop.time() > deadline:
                sock.close()
                await self.stop()
                raise RuntimeError(f"the gateway did not start listening on {self.host}:{self.port}")
            await asyncio.sleep(0.01)
        return self

    @property
    def running(self) -> bool:
        """Whether uvicorn is still serving."""
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish (5 s at most), and wait for uvicorn: forced
        to exit after 10 s, cancelled 2 s later. An error uvicorn ended with is logged and counted."""
        if self._server is not None:
            self._server.should_exit = True
        task = self._task
        if task is not None:
            await asyncio.wait({task}, timeout=10)  # raises nothing: the task's error is read below
            if not task.done():
                if self._server is not None:
                    self._server.force_exit = True
                await asyncio.wait({task}, timeout=2)
                await cancel_and_wait(task)
            if task.done() and not task.cancelled() and (error := task.exception()) is not None:
                FAULTS.note("serve the gateway's HTTP (uvicorn ended with an error)", error)
        self._server = None
        self._task = None
        if self.mcp is not None:
            await self.mcp.stop()
        if self.gateway is not None:
            await self.gateway.drain()
