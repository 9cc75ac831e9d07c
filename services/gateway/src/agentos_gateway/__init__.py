"""AgentOS gateway: HTTP ingress for integrators (CloudEvents, signed webhooks, mappings),
schedules and KPI triggers.

The Python SDK is :mod:`agentos_gateway.client`; the service entry points are in
:mod:`agentos_gateway.service`.
"""

from agentos_gateway.app import build_app
from agentos_gateway.auth import hash_key
from agentos_gateway.gateway import Gateway
from agentos_gateway.server import GatewayServer
from agentos_gateway.settings import ApiKeySpec, GatewaySettings, WebhookSource

__all__ = [
    "ApiKeySpec",
    "Gateway",
    "GatewayServer",
    "GatewaySettings",
    "WebhookSource",
    "build_app",
    "hash_key",
]
