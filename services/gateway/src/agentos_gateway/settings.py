"""Settings of the gateway (``AGENTOS_GATEWAY_*`` environment variables, or one YAML file).

Everything can come from the environment (lists and maps as JSON), or from the YAML file named
by ``AGENTOS_GATEWAY_CONFIG`` with the same field names; the environment wins over the file.

API keys are stored hashed: ``sha256`` is the hex SHA-256 of the key (``agentos_gateway.auth.hash_key``).
Webhook secrets are Standard Webhooks secrets (``whsec_<base64>``); list two while rotating.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Role = Literal["integrator", "operator", "analyst", "admin"]
ROLES: tuple[Role, ...] = ("integrator", "operator", "analyst", "admin")


class ApiKeySpec(BaseModel):
    """One API key: who it is, what it may do, how fast."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
    """Names the caller in events (``principal: key:<name>``) and logs; never the key itself."""
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    """Hex SHA-256 of the key."""
    roles: tuple[Role, ...] = ("integrator",)
    tenant: str | None = None
    """If set, the key may only write and read this tenant (and it is the default tenant)."""
    rate_per_s: float | None = Field(default=None, gt=0)
    """Sustained requests per second (default: the gateway's ``rate_per_s``)."""
    burst: int | None = Field(default=None, ge=1)
    """Requests allowed at once before the rate applies (default: the gateway's ``burst``)."""
    origins: tuple[str, ...] = ()
    """Webhook origins (``WebHook-Request-Origin`` of the CloudEvents handshake, e.g.
    ``events.example.com``) that may deliver to ``POST /events`` with this key; ``*`` allows any."""


class WebhookSource(BaseModel):
    """A third party that calls ``POST /webhooks/<source>`` with Standard Webhooks signatures."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    secrets: tuple[str, ...] = Field(min_length=1, max_length=2)
    """Signing secrets (``whsec_…``); during a rotation both the new and the old one verify."""
    mapping: str | None = None
    """The mapping that turns its payloads into events (default: the source's name);
    ``cloudevent`` takes structured or batched CloudEvents as they are."""
    tenant: str | None = None
    """Tenant of the events it produces (default: ``AGENTOS_TENANT``)."""
    origins: tuple[str, ...] = ()
    """Origins allowed by the CloudEvents webhook handshake (``OPTIONS`` with
    ``WebHook-Request-Origin``); ``*`` allows any. None: the handshake is refused (signed
    deliveries are still accepted; the signature is their credential)."""


class GatewaySettings(BaseSettings):
    """What the gateway reads besides the kernel's settings."""

    model_config = SettingsConfigDict(env_prefix="AGENTOS_GATEWAY_", extra="ignore", use_attribute_docstrings=True)

    host: str = "127.0.0.1"
    """Address to listen on (containers set 0.0.0.0)."""
    port: int = Field(default=0, ge=0, le=65535)
    """Port to listen on; 0 picks a free one (logged, and shown by `agentos status`)."""
    workers: int = Field(default=1, ge=1, le=64)
    """HTTP worker processes sharing the port (``SO_REUSEPORT``, Linux). Each is a whole gateway
    with its own NATS connection and shares state with the others only through NATS, as replicas
    do; schedules and KPI rules run in the first process only. Per-key rate limits are per
    process, so N workers admit up to N times a key's rate."""
    worker_of: int | None = None
    """Set by the gateway on the worker processes it starts (the first process's pid)."""
    config: Path | None = None
    """Optional YAML file with any of these settings (api_keys, webhooks …)."""
    api_keys: tuple[ApiKeySpec, ...] = ()
    """Hashed API keys with roles. With none configured, only loopback clients are let in (as admin)."""
    allow_anonymous_loopback: bool = True
    """With no API keys configured, let loopback clients in without one."""
    webhooks: dict[str, WebhookSource] = Field(default_factory=dict)
    """Webhook sources by name (the ``{source}`` of ``POST /webhooks/{source}``)."""
    webhook_tolerance_s: int = Field(default=300, ge=1, le=300)
    """How far a ``webhook-timestamp`` may be from now (at most 300 s, the library's own window)."""
    webhook_dedup_ttl_s: int = Field(default=30 * 24 * 3600, ge=1)
    """The replay window: how long a (source, ``webhook-id``) is remembered, so a redelivery is
    answered ``200 {"duplicate": true}`` and publishes nothing. At least ``webhook_tolerance_s``.
    A redelivery after it is published again under the same event ids, which consumers skip for
    ``AGENTOS_EVENT_IDS_TTL_S``."""
    rate_per_s: float = Field(default=100.0, gt=0)
    """Default sustained requests per second per API key."""
    burst: int = Field(default=200, ge=1)
    """Default burst per API key."""
    max_body_bytes: int = Field(default=1 << 20, ge=1024)
    """Largest request body; a bigger one is refused with 413. Each event is further limited
    by ``AGENTOS_MAX_EVENT_BYTES``."""
    refuse_foreign_types: tuple[str, ...] = ()
    """Tenants that accept only AgentOS's own event types (``dev.agentos.…``) at ``POST /events``;
    ``*`` for every tenant. Others' CloudEvents of foreign types are kept verbatim in the log
    (``ingress.raw.<tenant>``)."""
    idempotency_ttl_s: int = Field(default=24 * 3600, ge=60)
    """How long a response is kept for replay under its ``Idempotency-Key``."""
    mappings_dir: Path | None = None
    """Extra mapping files (``<source>.yaml``), next to the shipped ones."""
    schedules_dir: Path | None = None
    """Schedule files (``*.yaml``); none by default."""
    kpi_rules: Path | None = None
    """KPI rule file or folder (``*.yaml``); none by default. Rules need Postgres."""

    @model_validator(mode="after")
    def _window_covers_tolerance(self) -> GatewaySettings:
        if self.webhook_dedup_ttl_s < self.webhook_tolerance_s:
            raise ValueError(
                f"webhook_dedup_ttl_s ({self.webhook_dedup_ttl_s}) must be at least webhook_tolerance_s"
                f" ({self.webhook_tolerance_s}): a signed delivery is accepted for that long, so its"
                " replay record must last at least as long"
            )
        return self

    @field_validator("webhooks", mode="before")
    @classmethod
    def _lower_sources(cls, value: Any) -> Any:
        return {str(k).lower(): v for k, v in value.items()} if isinstance(value, dict) else value

    @classmethod
    def load(cls, **overrides: Any) -> GatewaySettings:
        """The settings from the environment, over the YAML file it names, over ``overrides``."""
        first = cls(**overrides)
        if first.config is None:
            return first
        data = yaml.safe_load(first.config.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{first.config}: expected a mapping of gateway settings")
        return cls.model_validate({**data, **first.model_dump(exclude_unset=True)})
