"""AgentOS memory: working, episodic and semantic memory with provenance and review."""

from agentos_memory.service import NAME, MemoryService, main, setup

__all__ = ["NAME", "MemoryService", "main", "setup"]
