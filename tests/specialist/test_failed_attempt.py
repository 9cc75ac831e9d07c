"""A failed attempt still reports the model calls it made, at best: a report that fails too is
counted (the health record's ``contained``), and the attempt's own error is what comes out."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest
from agentos_kernel.faults import FAULTS
from agentos_specialist import runner

PLACE = "report a failed attempt's model calls (best effort: any failure)"


async def test_a_failed_report_does_not_replace_the_attempts_own_error(monkeypatch: pytest.MonkeyPatch) -> None:
    async def failing_attempt(*args: Any) -> runner.Outcome:
        raise ValueError("the attempt's own error")

    async def failing_report(unsettled: list[Any], tool_ctx: Any) -> None:
        raise RuntimeError("the report failed too")

    monkeypatch.setattr(runner, "_loop", failing_attempt)
    monkeypatch.setattr(runner, "_settle", failing_report)
    before = FAULTS.counts[PLACE]
    nothing = cast(Any, None)
    with pytest.raises(ValueError, match="own error"):
        await runner.run_agent(nothing, nothing, nothing, {}, cast(Any, SimpleNamespace()), nothing)
    assert FAULTS.counts[PLACE] == before + 1
