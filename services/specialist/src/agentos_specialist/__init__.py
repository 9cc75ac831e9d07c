"""AgentOS specialist runtime: agents defined by charters, model calls through litellm.

The package's public surface is the service itself (`NAME`, `setup`, `main`, what
`agentos service specialist` runs), loaded on first use; everything else is internal to the service.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentos_specialist.service import NAME, main, setup

__all__ = ["NAME", "main", "setup"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'agentos_specialist' has no attribute {name!r}")
    return getattr(importlib.import_module("agentos_specialist.service"), name)
