"""Settings of the memory service (``AGENTOS_*`` environment variables)."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

from agentos_memory.knowledge import DEFAULT_DIR


class MemorySettings(BaseSettings):
    """What the memory service reads besides the kernel's settings."""

    model_config = SettingsConfigDict(env_prefix="AGENTOS_", extra="ignore", use_attribute_docstrings=True)

    knowledge_dir: Path = DEFAULT_DIR
    """Folder of curated Markdown files loaded as semantic memory on start."""
