"""How every command reports a failure: one line on stderr, a non-zero exit, no traceback."""

from __future__ import annotations

from typing import NoReturn

import typer


def fail(error: object, code: int = 2) -> NoReturn:
    """Print ``agentos: error: <error>`` (its text as it is: brackets are not markup) and exit ``code``."""
    from rich.markup import escape

    from agentos_cli.output import console

    console(stderr=True).print(f"[bold red]agentos: error:[/] {escape(str(error))}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)
