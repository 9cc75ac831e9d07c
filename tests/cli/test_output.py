"""The CLI's consoles print text as it is (no emoji shortcodes) and fall back to ASCII glyphs where
the output cannot encode others; off a terminal, tables print whole."""

from __future__ import annotations

import io

from agentos_cli import output
from agentos_cli.output import console, glyph
from rich.console import Console


def test_glyphs_fall_back_to_ascii_where_the_output_cannot_encode_them() -> None:
    ascii_out = Console(file=io.TextIOWrapper(io.BytesIO(), encoding="ascii"))
    assert glyph(ascii_out, "\u2022", "-") == "-"
    utf8_out = Console(file=io.TextIOWrapper(io.BytesIO(), encoding="utf-8"))
    assert glyph(utf8_out, "\u2022", "-") == "\u2022"
    recorded = console()
    recorded.begin_capture()
    recorded.print("policy denied (loop): :loop: :thumbs_up:")
    assert recorded.end_capture().strip() == "policy denied (loop): :loop: :thumbs_up:"


def test_a_table_off_a_terminal_prints_at_its_natural_width() -> None:
    buf = io.StringIO()
    out = Console(file=buf, width=80, emoji=False)
    rows = [{"id": "x" * 60, "what": "y" * 70, "who": "z" * 30}]
    output.emit(out, [output.Section("wide", rows)], "table")
    line = next(line for line in buf.getvalue().splitlines() if "x" * 60 in line)
    assert "y" * 70 in line and "z" * 30 in line and "\u2026" not in buf.getvalue()
