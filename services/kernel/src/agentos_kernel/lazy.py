"""Package exports loaded on first use (PEP 562), so that importing a package stays cheap.

    __getattr__ = lazy_exports(__name__, {"NAME": "service", "setup": "service"})

makes ``package.NAME`` import ``package.service`` the first time it is asked for, and caches it in
the package's namespace; an unknown name raises AttributeError as usual.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, where: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` resolving each name in ``where`` from its submodule of ``package``."""

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
