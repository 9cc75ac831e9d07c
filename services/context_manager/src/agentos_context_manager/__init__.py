"""AgentOS context-manager: exactly the context each agent needs for one task."""

from agentos_context_manager.assemble import Assembly, assemble
from agentos_context_manager.registry import AgentRegistry
from agentos_context_manager.service import NAME, main, setup
from agentos_context_manager.snapshots import restore

__all__ = ["NAME", "AgentRegistry", "Assembly", "assemble", "main", "restore", "setup"]
