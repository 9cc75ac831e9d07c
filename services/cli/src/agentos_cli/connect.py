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
    """Run a command; AgentOS errors (and ``also``) become one line on stderr and exit code 2,
    never a traceback."""
    import asyncio

    from agentos_kernel import AgentOSError

    try:
        return asyncio.run(coro)
    except (AgentOSError, *also) as exc:
        fail(exc)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


async def connected_bus(source: str = "cli") -> Bus:
    """A bus connection to the AgentOS configured here or started by `agentos up`."""
    from agentos_kernel import AgentOSError, Bus, KernelSettings
    from agentos_kernel.runtime import resolve

    settings = resolve(KernelSettings())
    if not settings.nats_url:
        raise AgentOSError(NOT_RUNNING)
    return await Bus.connect(settings, source=source)
