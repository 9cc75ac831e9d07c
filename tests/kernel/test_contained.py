"""A contained error is logged with its place, counted and reported, never swallowed silently;
one of a type the place did not expect propagates."""

from __future__ import annotations

import logging

import pytest
from agentos_kernel.faults import Faults, contained


def test_a_contained_error_is_logged_counted_and_reported(caplog: pytest.LogCaptureFixture) -> None:
    faults = Faults()
    assert faults.report() == {"contained": 0}
    with caplog.at_level(logging.WARNING, logger="agentos.faults"):
        for _ in range(2):
            with contained("close the test consumer", ConnectionError, faults=faults):
                raise ConnectionError("gone")
    assert faults.counts["close the test consumer"] == 2
    report = faults.report()
    assert report["contained"] == 2 and report["last_contained"] == "close the test consumer: ConnectionError: gone"
    assert "contained at close the test consumer (2 so far): ConnectionError: gone" in caplog.text


def test_an_unexpected_error_propagates_and_any_error_is_contained_only_when_asked() -> None:
    faults = Faults()
    with pytest.raises(KeyError), contained("read a cache", ConnectionError, faults=faults):
        raise KeyError("bug")
    with contained("best-effort write", faults=faults):
        raise KeyError("anything")
    assert dict(faults.counts) == {"best-effort write": 1}
    with pytest.raises(SystemExit), contained("anything", faults=faults):
        raise SystemExit(1)  # not an Exception: never contained
