"""Settings of the memory service (``AGENTOS_*`` environment variables)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from agentos_memory.knowledge import DEFAULT_DIR


class MemorySettings(BaseSettings):
    """What the memory service reads besides the kernel's settings."""

    model_config = SettingsConfigDict(env_prefix="AGENTOS_", extra="ignore", use_attribute_docstrings=True)

    knowledge_dir: Path = DEFAULT_DIR
    """Folder of curated Markdown files loaded as semantic memory on start."""
    duplicate_similarity: float = Field(default=0.9, gt=0, le=1)
    """How alike (0..1, case, punctuation and spacing ignored) a proposal must be to a committed
    entry to be refused as its duplicate."""
