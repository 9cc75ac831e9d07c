"""Waiting before trying again: the one backoff every AgentOS retry loop uses.

:class:`Backoff` gives the pause before attempt ``n`` (counting from 0): ``first_s`` doubling each
attempt up to ``cap_s``, then jittered down by up to ``jitter`` of itself, so many waiters that met
the same outage do not come back in step. The jitter can be drawn at random (live loops) or derived
from a key (the orchestrator's decisions, which must come out the same when the log is replayed).
:func:`retry_after` reads an HTTP ``Retry-After`` value, delta-seconds or an HTTP-date (RFC 9110
§10.2.3); a caller that has one waits for it, within its own cap.

Why not tenacity or stamina: they wrap one function call in a retry policy, while the loops here
are supervisors restarting a process, consumers holding a message through an outage, a publisher
retrying until a deadline, a decision folded from the log. What they share is the pause; this module
is that pause.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

#: Attempts past this all wait the cap (and 2**n stays a float).
_MAX_DOUBLINGS = 60


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff with jitter (see the module docs)."""

    first_s: float = 0.2
    """The pause before the first retry (attempt 0), before jitter."""
    cap_s: float = 10.0
    """No pause is longer."""
    factor: float = 2.0
    jitter: float = 0.2
    """Up to this fraction of each pause is taken off at random (0: none)."""

    def __post_init__(self) -> None:
        if not (0 < self.first_s <= self.cap_s) or self.factor < 1 or not (0 <= self.jitter < 1):
            raise ValueError(f"a backoff needs 0 < first_s <= cap_s, factor >= 1 and 0 <= jitter < 1: {self}")

    def delay(self, attempt: int, *, key: str | None = None) -> float:
        """The pause before ``attempt`` (0, 1, …); with ``key`` the jitter is derived from it and
        ``attempt``, so the same attempt of the same work always waits the same."""
        base = min(self.cap_s, self.first_s * self.factor ** min(max(attempt, 0), _MAX_DOUBLINGS))
        return base * (1 - self.jitter * (_fraction(key, attempt) if key is not None else random.random()))

    async def sleep(self, attempt: int, *, at_most: float | None = None) -> float:
        """Sleep the pause before ``attempt`` (no longer than ``at_most``); returns how long."""
        pause = self.delay(attempt) if at_most is None else max(0.0, min(self.delay(attempt), at_most))
        await asyncio.sleep(pause)
        return pause


HOLD = Backoff(first_s=0.5, cap_s=10.0)
"""Pauses of a consumer holding a message through an outage (Postgres down) before running it again."""


def _fraction(key: str, attempt: int) -> float:
    digest = hashlib.blake2b(f"{key}\x1f{attempt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait that a ``Retry-After`` header asks for: delta-seconds (``"120"``) or an
    HTTP-date (``"Wed, 21 Oct 2026 07:28:00 GMT"``); None when absent or unreadable; never negative."""
    if value is None or not (text := value.strip()):
        return None
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # an HTTP-date is always GMT; obsolete forms may not say so
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
