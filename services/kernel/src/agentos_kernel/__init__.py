"""AgentOS bus kernel: the only runtime code services share.

Connect (:class:`Bus`), provision the streams, publish typed CloudEvents with dedup and claim
checks, and consume them through durable consumers that retry with backoff and dead-letter
what cannot succeed.
"""

from agentos_kernel.bus import Bus, connect_nats
from agentos_kernel.consumer import Consumer
from agentos_kernel.exceptions import AgentOSError, BusUnavailable, ConfigError, Reject, Retry, Unavailable
from agentos_kernel.settings import KernelSettings

__all__ = [
    "AgentOSError", "Bus", "BusUnavailable", "ConfigError", "Consumer", "KernelSettings", "Reject",
    "Retry", "Unavailable", "connect_nats",
]
