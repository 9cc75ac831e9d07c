"""No failure is swallowed anywhere in the source: ``contextlib.suppress(Exception)`` is gone, and a
broad ``except Exception`` / ``BaseException`` either raises again or is a marked boundary that says
why it must outlive what it calls (``# noqa: BLE001  (boundary: why)``, or ``# boundary: why`` on
the line or opening its block where ruff's BLE001 already sees it logged). ruff's BLE rules keep new ones out;
what a place carries on after is contained by type (agentos_kernel.faults), logged and counted."""

from __future__ import annotations

from pathlib import Path

from tests.kernel.test_no_swallowed_failures import BROAD, SUPPRESSED, _block, marked_boundary

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [*sorted(ROOT.glob("services/*/src/**/*.py")), *sorted(ROOT.glob("schemas/src/**/*.py"))]


def test_no_broad_catch_outside_a_marked_boundary_and_nothing_suppressed() -> None:
    found = []
    for path in SOURCES:
        lines = path.read_text().splitlines()
        for at, line in enumerate(lines):
            where = f"{path.relative_to(ROOT)}:{at + 1}"
            if SUPPRESSED.search(line):
                found.append(f"{where}: suppresses any exception")
            if not BROAD.search(line):
                continue
            block = _block(lines, at)
            if any(b.strip() == "raise" or b.strip().startswith("raise ") for b in block):
                continue
            if not marked_boundary(line, block):
                found.append(f"{where}: a broad catch that neither raises again nor is a marked boundary")
    assert len(SOURCES) > 100
    assert not found, "\n".join(found)
