"""The ``agentos`` command. Its public surface is the command line itself (``agentos --help``);
``app`` is the typer application behind it, loaded on first use so that importing this package
stays cheap."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentos_cli.main import app

__all__ = ["app"]


# Written out rather than agentos_kernel.lazy.lazy_exports: importing the CLI must not import the
# kernel (tests/cli/test_startup_imports.py).
def __getattr__(name: str) -> Any:
    if name != "app":
        raise AttributeError(f"module 'agentos_cli' has no attribute {name!r}")
    return importlib.import_module("agentos_cli.main").app
