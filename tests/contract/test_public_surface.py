"""Each package's public surface is declared (`__all__`) and pinned here: a name added to or
removed from a package's exports is a change to its API, made on purpose in this file too. Every
declared name resolves, and `from package import *` gives exactly those names."""

from __future__ import annotations

import importlib

import pytest

SURFACE = {
    "agentos_cli": ["app"],
    "agentos_schemas": [
        "CATALOGUE",
        "DLQ_STREAM",
        "DecodeError",
        "EVENTS_STREAM",
        "Event",
        "EventData",
        "NamingError",
        "WireEvent",
        "decode",
        "derived_event_id",
        "dlq_subject",
        "encode",
        "event_subject",
        "events",
        "headers_for",
        "id_time",
        "new_event_id",
    ],
    "agentos_kernel": [
        "AgentOSError",
        "Bus",
        "BusUnavailable",
        "ConfigError",
        "Consumer",
        "Failed",
        "InvalidInput",
        "KernelSettings",
        "Refused",
        "Reject",
        "Retry",
        "Unavailable",
        "connect_nats",
        "describe",
    ],
    "agentos_audit": ["DURABLE", "FILTERS", "NAME", "main", "setup"],
    "agentos_context_manager": ["AgentRegistry", "Assembly", "NAME", "assemble", "main", "restore", "setup"],
    "agentos_gateway": [
        "ApiKeySpec",
        "Gateway",
        "GatewayServer",
        "GatewaySettings",
        "WebhookSource",
        "build_app",
        "hash_key",
    ],
    "agentos_gateway.mcp_server": ["InProcessGateway", "McpEndpoint", "RemoteGateway", "TOOLS", "build_server"],
    "agentos_memory": ["MemoryService", "NAME", "main", "setup"],
    "agentos_verify": [
        "Checkpoint",
        "PROOF_FORMAT",
        "VerificationError",
        "Verifier",
        "check",
        "check_consistency",
        "check_inclusion",
        "entry_event_id",
        "key_id",
        "leaf_hash",
        "node_hash",
        "open_checkpoint",
        "open_note",
        "root_from_inclusion",
        "verify_consistency",
        "verify_inclusion",
    ],
    "agentos_offline_model": [
        "Answer",
        "ChatRequest",
        "Fault",
        "Match",
        "OfflineModelServer",
        "REFUSAL_TEXT",
        "RequestFacts",
        "Respond",
        "Rule",
        "RuleHit",
        "Scenario",
        "ToolCallSpec",
        "build_app",
        "count_tokens",
        "default_text",
        "generate_from_schema",
        "json_object_answer",
        "main",
        "plan_answer",
    ],
    "agentos_orchestrator": ["NAME", "main", "setup"],
    "agentos_policy": ["NAME", "main", "setup"],
    "agentos_specialist": ["NAME", "main", "setup"],
}


@pytest.mark.parametrize("package", sorted(SURFACE))
def test_the_package_exports_what_is_pinned(package: str) -> None:
    module = importlib.import_module(package)
    assert sorted(module.__all__) == SURFACE[package], f"{package}.__all__ changed: update SURFACE if on purpose"
    missing = [name for name in module.__all__ if getattr(module, name, None) is None]
    assert not missing, f"{package} declares names it does not have: {missing}"
    star: dict[str, object] = {}
    exec(f"from {package} import *", star)
    assert sorted(k for k in star if not k.startswith("__")) == SURFACE[package]
