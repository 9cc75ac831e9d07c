"""AgentOS policy: the decision point for every model call, tool call, memory write and outside action.

The package's public surface is the service itself (`NAME`, `setup`, `main`, what
`agentos service policy` runs), loaded on first use; everything else is internal to the service.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentos_policy.service import NAME, main, setup

__all__ = ["NAME", "main", "setup"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'agentos_policy' has no attribute {name!r}")
    return getattr(importlib.import_module("agentos_policy.service"), name)
