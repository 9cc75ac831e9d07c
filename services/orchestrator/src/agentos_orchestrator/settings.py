"""Settings of the orchestrator service (``AGENTOS_*`` environment variables)."""

from __future__ import annotations

from pathlib import Path

from agentos_kernel import KernelSettings
from pydantic_settings import SettingsConfigDict


class OrchestratorSettings(KernelSettings):
    """The kernel's settings and what the orchestrator reads besides them."""

    model_config = SettingsConfigDict(env_prefix="AGENTOS_", extra="ignore", use_attribute_docstrings=True)

    planner_model: str = "smart"
    """Model alias the LLM planner uses."""
    planner_fallbacks: tuple[str, ...] = ("fast",)
    workflows_dir: Path | None = None
    """Folder of declared workflow files (default: the ones shipped with the orchestrator)."""
    wait_timeout_s: float = 120.0
    """How long a step may wait for a free specialist before the goal is escalated."""
    tick_s: float = 0.25
    ownership_every_s: float = 2.0
    """How often a replica renews its partition leases and rebalances them with the other replicas
    (at most 3.33 s: a lease lapses 10 s after its last renewal)."""
