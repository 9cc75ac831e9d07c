"""AgentOS offline model: a deterministic LLM behind the real OpenAI-compatible HTTP API.

Tests and the offline demo point litellm's ``openai/`` provider at :class:`OfflineModelServer`
(``api_base=server.url``), so they exercise the real HTTP path with no API key. What it answers is
decided by a :class:`Scenario` of ordered rules, with deterministic defaults when none matches.
"""

from agentos_offline_model.app import Answer, ChatRequest, build_app, plan_answer
from agentos_offline_model.generate import (
    REFUSAL_TEXT,
    count_tokens,
    default_text,
    generate_from_schema,
    json_object_answer,
)
from agentos_offline_model.scenario import (
    Fault,
    Match,
    RequestFacts,
    Respond,
    Rule,
    RuleHit,
    Scenario,
    ToolCallSpec,
)
from agentos_offline_model.server import OfflineModelServer, main

__all__ = [
    "REFUSAL_TEXT",
    "Answer",
    "ChatRequest",
    "Fault",
    "Match",
    "OfflineModelServer",
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
]
