"""AgentOS orchestrator: goals to plans to tasks, tracked to completion.

The package's public surface is the service itself (`NAME`, `setup`, `main`, what
`agentos service orchestrator` runs), loaded on first use; everything else is internal to the service.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agentos_kernel.lazy import lazy_exports

if TYPE_CHECKING:
    from agentos_orchestrator.service import NAME, main, setup

__all__ = ["NAME", "main", "setup"]
__getattr__ = lazy_exports(__name__, dict.fromkeys(__all__, "service"))
