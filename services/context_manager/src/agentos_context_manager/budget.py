"""Fitting the droppable parts of a context into what is left of the token budget. No I/O.

Only exact counts of rendered text decide: the caller passes the same render function that
builds the message, so what is counted here is what the model receives.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

T = TypeVar("T")
Counter = Callable[[str], int]


@dataclass(frozen=True)
class HandoffItem:
    """One earlier step's output as it is handed over: the step id and its (compact JSON) body."""

    step: str
    body: str
    truncated: bool = False

    def render(self) -> str:
        """The item as it appears in the message: a heading with the step id, then the body."""
        return f"## {self.step}\n{self.body}"


def longest_fitting_prefix(items: Sequence[T], room: int, cost: Callable[[Sequence[T]], int]) -> int:
    """The largest ``n`` with ``cost(items[:n]) <= room`` (``cost`` grows with ``n``; ``cost([])`` is 0)."""
    lo, hi = 0, len(items)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if cost(items[:mid]) <= room:
            lo = mid
        else:
            hi = mid - 1
    return lo


def fit_memory(
    entries: Sequence[T], room: int, count: Counter, render: Callable[[Sequence[T]], str]
) -> tuple[list[T], list[T]]:
    """Keep the best entries (``entries`` is best first) whose rendering fits ``room``; drop the rest.

    Dropping from the end drops the lowest scores first. Returns (kept, dropped), the dropped
    in the order they were dropped (lowest score first).
    """

    def cost(part: Sequence[T]) -> int:
        return count(render(part)) if part else 0

    n = longest_fitting_prefix(entries, room, cost)
    return list(entries[:n]), list(reversed(entries[n:]))


def truncate(text: str, limit: int, count: Counter) -> str:
    """The longest prefix of ``text`` that, with its ``…[truncated N tokens]`` marker, fits ``limit``.

    When even the marker does not fit, the marker alone is returned.
    """
    total = count(text)
    keep = max(limit - count(f"…[truncated {total} tokens]"), 0)
    lo, hi = 0, len(text)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count(text[:mid]) <= keep:
            lo = mid
        else:
            hi = mid - 1
    prefix = text[:lo]
    return f"{prefix}…[truncated {total - count(prefix)} tokens]"


def _share_out(items: Sequence[HandoffItem], room: int, count: Counter) -> list[HandoffItem]:
    """Water-filling: small bodies stay whole, the large ones share what is left equally."""
    sizes = {i: count(item.body) for i, item in enumerate(items)}
    result = list(items)
    remaining = room
    order = sorted(sizes, key=lambda i: sizes[i])
    for position, i in enumerate(order):
        share = remaining // (len(order) - position)
        if sizes[i] <= share:
            remaining -= sizes[i]
            continue
        body = truncate(items[i].body, share, count)
        result[i] = replace(items[i], body=body, truncated=True)
        remaining -= min(count(body), share)
    return result


def fit_handoff(
    items: Sequence[HandoffItem], room: int, count: Counter, render: Callable[[Sequence[HandoffItem]], str]
) -> tuple[list[HandoffItem], list[str]]:
    """Truncate hand-off bodies (largest first) until the rendered section fits ``room``.

    Returns the items in their original order and the step ids that were cut. If even empty
    bodies do not fit, every body is cut to its marker and the section stays over ``room``.
    """
    if not items or count(render(items)) <= room:
        return list(items), []
    overhead = count(render([replace(item, body="") for item in items]))
    bodies = room - overhead
    fitted = list(items)
    for _ in range(6):  # counts of joined text can differ from the sum of parts by a token or two
        fitted = _share_out(items, max(bodies, 0), count)
        excess = count(render(fitted)) - room
        if excess <= 0 or bodies <= 0:
            break
        bodies -= excess
    return fitted, [item.step for item in fitted if item.truncated]
