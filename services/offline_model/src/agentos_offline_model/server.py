"""Run the offline model with uvicorn on 127.0.0.1, on a free port the OS picks.

From Python::

    with OfflineModelServer(Scenario.load("scenario.yaml")) as server:
        litellm.completion(model="openai/offline-fast", api_base=server.url, api_key="offline", ...)

From a shell: ``python -m agentos_offline_model --port 0 --scenario FILE`` prints the URL once ready.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from types import FrameType, TracebackType

import uvicorn

from agentos_offline_model.app import build_app
from agentos_offline_model.scenario import Scenario

DEFAULT_HOST = "127.0.0.1"


class OfflineModelServer:
    """The offline model served by uvicorn in a background thread.

    ``port=0`` (the default) binds a free port chosen by the OS; :attr:`url` is the
    OpenAI-compatible base URL (``http://127.0.0.1:PORT/v1``) once :meth:`start` returned.
    """

    def __init__(
        self,
        scenario: Scenario | None = None,
        host: str = DEFAULT_HOST,
        port: int = 0,
        log_level: str = "warning",
        startup_timeout_s: float = 10.0,
    ) -> None:
        self.scenario = scenario if scenario is not None else Scenario()
        self._host = host
        self._requested_port = port
        self._log_level = log_level
        self._startup_timeout_s = startup_timeout_s
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        """The bound TCP port (only known once started)."""
        if self._port is None:
            raise RuntimeError("the offline model server is not started")
        return self._port

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT`` without the ``/v1`` suffix."""
        return f"http://{self._host}:{self.port}"

    @property
    def url(self) -> str:
        """The OpenAI-compatible base URL, ``http://HOST:PORT/v1``: pass it as litellm's ``api_base``."""
        return f"{self.base_url}/v1"

    @property
    def running(self) -> bool:
        """Whether the serving thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> OfflineModelServer:
        """Bind the socket, start serving in a daemon thread and wait until uvicorn is ready."""
        if self._thread is not None:
            raise RuntimeError("the offline model server is already started")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted sockets inherit TCP_NODELAY; without it small responses on kept-alive
        # connections wait ~40 ms for delayed ACKs.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((self._host, self._requested_port))
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(
            build_app(self.scenario),
            log_level=self._log_level,
            lifespan="off",
            timeout_graceful_shutdown=2,
            access_log=False,
        )
        server = uvicorn.Server(config)
        self._server = server
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name=f"offline-model-{self._port}", daemon=True
        )
        self._thread.start()
        self._wait_started(sock)
        return self

    def _wait_started(self, sock: socket.socket) -> None:
        deadline = time.monotonic() + self._startup_timeout_s
        while not (self._server is not None and self._server.started):
            if self._thread is None or not self._thread.is_alive() or time.monotonic() > deadline:
                sock.close()
                self.stop()
                raise RuntimeError("the offline model server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        """Ask uvicorn to exit and wait for its thread (idempotent)."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = None
        self._thread = None

    def __enter__(self) -> OfflineModelServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m agentos_offline_model",
        description="Serve a deterministic, OpenAI-compatible offline model; prints its base URL.",
    )
    parser.add_argument("--scenario", type=Path, help="scenario YAML file (default: no rules)")
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one (default)")
    parser.add_argument("--log-level", default="warning", help="uvicorn log level (default: warning)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: serve until SIGINT/SIGTERM, printing the base URL once ready."""
    args = _parse_args(argv)
    scenario = Scenario.load(args.scenario) if args.scenario else Scenario()
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    with OfflineModelServer(scenario, host=args.host, port=args.port, log_level=args.log_level) as server:
        print(server.url, flush=True)
        while not stop.wait(0.2):
            if not server.running:
                print("offline model server stopped unexpectedly", file=sys.stderr)
                return 1
    return 0
