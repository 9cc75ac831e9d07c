"""The spend-per-minute window keeps a running sum instead of summing the minute on every decision:
it must count exactly the entries the previous implementation counted (same trimming at the window's
edge, entries folded out of time order included) and give their correctly rounded sum."""

from __future__ import annotations

import math
from collections import deque

from agentos_policy.state import WINDOW_S, Recorded, SpendWindow, State
from agentos_schemas.rpc import PolicyRequest
from hypothesis import given, settings
from hypothesis import strategies as st


class Reference:
    """The implementation the window replaced: trim the front, then sum what is left."""

    def __init__(self) -> None:
        self.window: deque[tuple[float, float]] = deque()

    def add(self, at: float, cost: float) -> None:
        self.window.append((at, cost))

    def total(self, now: float) -> list[float]:
        while self.window and self.window[0][0] < now - WINDOW_S:
            self.window.popleft()
        return [cost for _, cost in self.window]


# Times on a coarse grid so that entries land exactly on the window's edge (now - 60) often.
times = st.integers(min_value=0, max_value=400).map(lambda n: n * 0.5)
costs = st.one_of(
    st.floats(min_value=0, max_value=5, allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, 0.1, 0.2, 0.3, 1e-9, 0.00021, 1.0, 5e-324, 2.0**-60]),
    st.floats(min_value=1e-300, max_value=1e300, allow_nan=False, allow_infinity=False),
)
ops = st.lists(
    st.one_of(st.tuples(st.just("add"), times, costs), st.tuples(st.just("total"), times, st.just(0.0))), max_size=120
)


@settings(max_examples=400, deadline=None)
@given(ops)
def test_the_running_sum_counts_what_the_rescan_counted(steps: list[tuple[str, float, float]]) -> None:
    window, reference = SpendWindow(), Reference()
    for op, at, cost in steps:
        if op == "add":
            window.add(at, cost)
            reference.add(at, cost)
        else:
            got, kept = window.total(at), reference.total(at)
            assert list(window.entries) == list(reference.window)  # the same entries at the same edge
            assert got == math.fsum(kept)  # their exact sum, rounded once
            naive = sum(kept)  # what the rescan returned: within rounding of the exact sum
            assert math.isclose(got, naive, rel_tol=1e-12, abs_tol=1e-300)


def test_window_edges_and_late_entries() -> None:
    window = SpendWindow()
    window.add(100.0, 0.1)
    window.add(130.0, 0.2)
    assert window.total(160.0) == math.fsum([0.1, 0.2])  # 100.0 is exactly at the edge: still counted
    assert window.total(160.000001) == 0.2
    window.add(120.0, 0.4)  # folded late (another replica's decision): behind a newer one
    assert window.total(185.0) == math.fsum([0.2, 0.4])  # it leaves only when it reaches the front
    assert window.total(190.0 + 1e-9) == 0.0 and len(window) == 0
    assert window.total(10.0) == 0.0


def test_non_finite_costs_behave_as_a_float_sum_would() -> None:
    window = SpendWindow()
    window.add(0.0, math.inf)
    window.add(1.0, 0.5)
    assert window.total(1.0) == math.inf
    window.add(2.0, math.nan)
    assert math.isnan(window.total(2.0))
    assert window.total(60.5) != window.total(60.5)  # nan still inside (added at 2.0)
    assert window.total(62.5) == 0.0
    window.add(70.0, 1e308)
    window.add(70.0, 1e308)
    assert window.total(70.0) == math.inf


def test_state_spend_per_minute_and_eviction() -> None:
    state = State()
    for n in range(5):
        request = PolicyRequest(
            tenant="t", principal="agent:a", action="model_call", resource="m", agent="a", estimated_cost_usd=0.1
        )
        state.record(Recorded(f"d{n}", request, "allow", None, 1000.0 + n))
    assert state.spend_per_minute("t", 1060.0) == math.fsum([0.1] * 5)
    assert state.spend_per_minute("t", 1062.5) == math.fsum([0.1] * 2)
    assert state.spend_per_minute("other", 1062.5) == 0.0
    state.evict(2000.0)
    assert "t" not in state.spend
