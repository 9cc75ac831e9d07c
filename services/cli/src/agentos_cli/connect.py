"""Running a command's coroutine and reaching the running AgentOS, shared by every command.

Kept free of heavy imports: the kernel is imported when a command runs, not when the CLI starts.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from agentos_cli.errors import fail

if TYPE_CHECKING:
    from agentos_kernel import Bus

T = TypeVar("T")
NOT_RUNNING = "no AgentOS is running here: start one with `agentos up` (or set AGENTOS_NATS_URL)"


def run(coro: Coroutine[Any, Any, T], *also: type[BaseException]) -> T:
    """Run a command; AgentOS errors (and ``also``) become one line on stderr, never a traceback,
    and the exit code of the error's class (2 configuration or input, 3 refused, 75 unavailable:
    :mod:`agentos_kernel.exceptions`); ``also`` exits 2."""
    import asyncio
    import os

    from agentos_kernel.exceptions import AgentOSError, describe

    if not os.environ.get("AGENTOS_NATS_URL", "").startswith(("ws://", "wss://")):
        nats_without_websockets()
    try:
        return asyncio.run(coro)
    except AgentOSError as exc:
        fail(exc, describe(exc).exit_code)
    except also as exc:
        fail(exc)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


async def connected_bus(source: str = "cli") -> Bus:
    """A bus connection to the AgentOS configured here or started by `agentos up`."""
    from agentos_kernel.exceptions import ConfigError
    from agentos_kernel.runtime import resolve
    from agentos_kernel.settings import KernelSettings

    settings = resolve(KernelSettings())
    if not settings.nats_url:
        raise ConfigError(NOT_RUNNING)
    from agentos_kernel.bus import Bus

    return await Bus.connect(settings, source=source)


def nats_without_websockets() -> None:
    """Import nats-py without its WebSocket transport, which costs aiohttp (~0.1 s) on every import.

    nats-py imports aiohttp only for ``ws://`` servers, and treats it as optional; an operator's
    command reaching NATS over TCP imports nats with aiohttp hidden, so it is skipped. aiohttp
    itself stays importable afterwards for anything else in the process. Nothing happens if nats
    or aiohttp is already imported."""
    import sys

    if "nats" in sys.modules or "aiohttp" in sys.modules:
        return
    # None makes `import aiohttp` raise ImportError (documented in the import system's reference);
    # typeshed types sys.modules' values as ModuleType only
    sys.modules["aiohttp"] = None  # pyright: ignore[reportArgumentType]  (typeshed: no None)
    try:
        import nats.aio.transport  # noqa: F401
    finally:
        del sys.modules["aiohttp"]
