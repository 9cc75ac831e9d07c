"""How every command prints: one console factory, one listing format option, tables never cut.

* Consoles come from :func:`console`: rich's emoji shortcodes are off, so text from the log such
  as ``denied (loop): …:loop:…`` prints as it is; decorative glyphs go through :func:`glyph`,
  which falls back to ASCII when the output cannot encode them.
* Every listing command takes ``--format table|json|csv`` (:data:`Format`), with ``--json`` as an
  alias (:data:`Json`), and prints through :func:`emit`.
* Off a terminal (CI logs, pipes) rich would cut tables at 80 columns; :func:`show` prints them at
  their natural width instead, so every cell is whole and each row stays on one line.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, TypeAlias

import typer

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.table import Table

FORMATS = ("table", "json", "csv")
Format: TypeAlias = Annotated[str, typer.Option("--format", help="Output format: table, json or csv")]
Json: TypeAlias = Annotated[bool, typer.Option("--json", help="Same as --format json")]
_WIDE = 100_000


def console(*, stderr: bool = False) -> Console:
    """A console for the CLI: no emoji shortcode replacement (data prints as it is)."""
    from rich.console import Console

    return Console(stderr=stderr, emoji=False)


def glyph(out: Console, fancy: str, plain: str) -> str:
    """``fancy`` where the output can encode it, else the ASCII ``plain``."""
    try:
        fancy.encode(out.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return plain
    return fancy


def chosen(fmt: str, as_json: bool) -> str:
    """The format asked for by ``--format``/``--json``; a bad value is a usage error (exit 2)."""
    if as_json and fmt not in ("table", "json"):
        raise typer.BadParameter(f"--json and --format {fmt} contradict each other", param_hint="--json")
    fmt = "json" if as_json else fmt.lower()
    if fmt not in FORMATS:
        raise typer.BadParameter(f"must be one of {', '.join(FORMATS)}, not {fmt!r}", param_hint="--format")
    return fmt


def plain(value: Any) -> Any:
    """A JSON/CSV-friendly value (times in ISO 8601 UTC, bytes in hex)."""
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat() if value.tzinfo else value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, float):
        return round(value, 9)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(v) for v in value]
    return value


def cell(value: Any) -> str:
    """A table cell: lists joined, times to the millisecond in UTC, nothing for None."""
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    return str(plain(value))


@dataclass
class Section:
    """One table of a listing: its rows (dicts, in column order) and, for none, its columns."""

    title: str
    rows: list[dict[str, Any]]
    columns: Sequence[str] = ()
    empty: str = "(none)"
    cells: dict[str, Any] = field(default_factory=dict)
    """Per-column functions that turn a value into the table cell (markup allowed)."""

    def names(self) -> list[str]:
        """The columns: those declared, then any other key of any row, in order of appearance."""
        names = list(self.columns)
        for row in self.rows:
            names += [k for k in row if k not in names]
        return names or ["(no rows)"]


def table(section: Section) -> Table:
    """The section as a rich table whose cells wrap rather than being cut."""
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=section.title or None)
    names = section.names()
    for name in names:
        t.add_column(name, overflow="fold")
    for row in section.rows:
        t.add_row(*(section.cells[c](row.get(c)) if c in section.cells else escape(cell(row.get(c))) for c in names))
    if not section.rows:
        t.add_row(section.empty, *([""] * (len(names) - 1)))
    return t


def show(out: Console, renderable: RenderableType) -> None:
    """Print ``renderable``; off a terminal at its natural width (never narrower than the console)."""
    if out.is_terminal:
        out.print(renderable)
        return
    natural = out.measure(renderable, options=out.options.update(max_width=_WIDE)).maximum
    saved = out.width
    out.width = max(saved, natural)
    try:
        out.print(renderable)
    finally:
        out.width = saved


def to_json(document: Any) -> str:
    return json.dumps(plain(document), ensure_ascii=False, indent=2, default=str)


def to_csv(sections: Sequence[Section]) -> str:
    """One CSV; with several sections, a leading ``table`` column says which each row is from."""
    many = len(sections) > 1
    names: list[str] = ["table"] if many else []
    for sec in sections:
        names += [n for n in sec.names() if n not in names] if sec.rows else []
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=names or ["(no rows)"], lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for sec in sections:
        for row in sec.rows:
            values = {k: _csv_cell(v) for k, v in row.items()}
            writer.writerow({"table": sec.title, **values} if many else values)
    return buf.getvalue()


def _csv_cell(value: Any) -> Any:
    value = plain(value)
    if isinstance(value, list):
        return ";".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    return value


def emit(
    out: Console, sections: Sequence[Section], fmt: str, *, document: Any = None, notes: Iterable[str] = ()
) -> None:
    """Print a listing: tables (and ``notes`` under them), or CSV, or JSON — ``document`` if given,
    else the rows of the one section, or ``{title: rows}`` of several."""
    if fmt == "json":
        if document is None:
            document = sections[0].rows if len(sections) == 1 else {s.title: s.rows for s in sections}
        text = to_json(document)
        out.print_json(text) if out.is_terminal else out.out(text, highlight=False)
    elif fmt == "csv":
        out.out(to_csv(sections), end="", highlight=False)
    else:
        for sec in sections:
            show(out, table(sec))
        for note in notes:
            out.print(note, highlight=False, soft_wrap=True)
