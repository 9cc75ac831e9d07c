"""AgentOS bus kernel: the only runtime code services share.

Connect (:class:`Bus`), provision the streams, publish typed CloudEvents with dedup and claim
checks, and consume them through durable consumers that retry with backoff and dead-letter
what cannot succeed.

The names below are loaded on first use (PEP 562), so ``from agentos_kernel.exceptions import
...`` or ``agentos_kernel.KernelSettings`` does not pay for NATS, the schema catalogue and
the redactor: the CLI's commands start faster for it (``benchmarks/bench_cli_startup.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agentos_kernel.lazy import lazy_exports

if TYPE_CHECKING:
    from agentos_kernel.bus import Bus
    from agentos_kernel.consumer import Consumer
    from agentos_kernel.exceptions import (
        AgentOSError,
        BusUnavailable,
        ConfigError,
        Failed,
        InvalidInput,
        Refused,
        Reject,
        Retry,
        Unavailable,
        describe,
    )
    from agentos_kernel.nats_connection import connect_nats
    from agentos_kernel.settings import KernelSettings

_WHERE = {
    "Bus": "bus",
    "connect_nats": "nats_connection",
    "Consumer": "consumer",
    "KernelSettings": "settings",
    **dict.fromkeys(
        (
            "AgentOSError",
            "BusUnavailable",
            "ConfigError",
            "Failed",
            "InvalidInput",
            "Refused",
            "Failed",
            "InvalidInput",
            "Refused",
            "Reject",
            "Retry",
            "Unavailable",
            "describe",
        ),
        "exceptions",
    ),
}
__all__ = [
    "AgentOSError",
    "Bus",
    "BusUnavailable",
    "ConfigError",
    "Consumer",
    "Failed",
    "InvalidInput",
    "KernelSettings",
    "Refused",
    "Reject",
    "Retry",
    "Unavailable",
    "connect_nats",
    "describe",
]


__getattr__ = lazy_exports(__name__, _WHERE)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
