"""AgentOS orchestrator: goals to plans to tasks, tracked to completion.

The package's public surface is the service itself (`NAME`, `setup`, `main`, what
`agentos service orchestrator` runs), loaded on first use; everything else is internal to the service.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentos_orchestrator.service import NAME, main, setup

__all__ = ["NAME", "main", "setup"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'agentos_orchestrator' has no attribute {name!r}")
    return getattr(importlib.import_module("agentos_orchestrator.service"), name)
