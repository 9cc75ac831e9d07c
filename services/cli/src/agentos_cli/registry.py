"""The services `agentos up` supervises and `agentos service NAME` runs, by import path.

The CLI is the launcher, so it names services as strings and imports one only to run it;
services never import each other.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

SERVICES: dict[str, str] = {
    "orchestrator": "agentos_orchestrator.service",
    "context-manager": "agentos_context_manager.service",
    "specialist": "agentos_specialist.service",
    "memory": "agentos_memory.service",
    "policy": "agentos_policy.service",
    "audit": "agentos_audit.service",
    "gateway": "agentos_gateway.service",
}


def available() -> list[str]:
    """Services whose package is installed, in start order."""
    found = []
    for name, module in SERVICES.items():
        package = module.split(".")[0]
        if importlib.util.find_spec(package) is not None and importlib.util.find_spec(module) is not None:
            found.append(name)
    return found


def load(name: str) -> ModuleType:
    if name not in SERVICES:
        raise KeyError(f"unknown service {name!r}; known: {', '.join(SERVICES)}")
    return importlib.import_module(SERVICES[name])
