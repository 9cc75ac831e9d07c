"""Where a running ``agentos up`` can be found: ``<state_dir>/runtime.json``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from agentos_kernel.settings import KernelSettings

RUNTIME_FILE = "runtime.json"


def write_runtime(settings: KernelSettings, info: dict[str, Any]) -> Path:
    path = settings.state_dir / RUNTIME_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(info, indent=2))
    return path


def read_runtime(settings: KernelSettings) -> dict[str, Any] | None:
    path = settings.state_dir / RUNTIME_FILE
    try:
        info: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    pid = info.get("pid")
    if isinstance(pid, int):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
    return info


def resolve(settings: KernelSettings) -> KernelSettings:
    """Settings with the URLs of a running ``agentos up`` filled in where none were configured."""
    if settings.nats_url and settings.database_url:
        return settings
    info = read_runtime(settings) or {}
    return settings.model_copy(
        update={
            "nats_url": settings.nats_url or info.get("nats_url"),
            "database_url": settings.database_url or info.get("database_url"),
        }
    )
