"""Errors a process contains instead of failing on them: each one logged with its reason, counted,
and reported in the process's health record (what ``agentos status`` shows), never swallowed.

Some failures must not stop the work around them: closing a consumer that is already gone,
a best-effort cache write, one listener among many. Such a place says what it was doing::

    with contained("unsubscribe the follower's consumer", nats.errors.Error):
        await psub.unsubscribe()

An exception of the named types (``Exception`` only where any failure is acceptable there) is
logged (warning, with the place and the exception), counted under the place, and the block is
left; anything else propagates. :data:`FAULTS` holds the counts; a service's heartbeat reports
them as ``contained`` (total) and ``last_contained`` (the latest place and error).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("agentos.faults")


@dataclass
class Faults:
    """Counts of contained errors by place, and the latest one."""

    counts: Counter[str] = field(default_factory=Counter)
    last: tuple[float, str, str] | None = None
    """(time, place, error) of the latest."""

    def note(self, where: str, exc: BaseException, *, level: int = logging.WARNING) -> None:
        """Record that ``exc`` was contained at ``where`` (and log it)."""
        self.counts[where] += 1
        error = f"{type(exc).__name__}: {exc}"[:300]
        self.last = (time.time(), where, error)
        log.log(level, "contained at %s (%d so far): %s", where, self.counts[where], error)

    def report(self) -> dict[str, Any]:
        """What a health record carries: the total, and the latest place and error."""
        if self.last is None:
            return {"contained": 0}
        at, where, error = self.last
        return {"contained": sum(self.counts.values()), "last_contained": f"{where}: {error}", "last_contained_at": at}


FAULTS = Faults()
"""This process's contained errors."""


@contextmanager
def contained(
    where: str, *expected: type[BaseException], level: int = logging.WARNING, faults: Faults = FAULTS
) -> Iterator[None]:
    """Contain an exception of the ``expected`` types (default: any ``Exception``) raised in the
    block: log it with ``where``, count it, go on (see the module docs)."""
    catch: tuple[type[BaseException], ...] = expected or (Exception,)
    try:
        yield
    except catch as exc:
        faults.note(where, exc, level=level)
