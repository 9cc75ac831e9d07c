"""Settings shared by every AgentOS process (``AGENTOS_*`` environment variables)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class KernelSettings(BaseSettings):
    """Connection and bus settings. The embedded default needs none of them set."""

    model_config = SettingsConfigDict(env_prefix="AGENTOS_", extra="ignore", use_attribute_docstrings=True)

    nats_url: str | None = None
    """NATS server URL(s), comma-separated. Unset: `agentos up` starts an embedded server."""
    database_url: str | None = None
    """Postgres URL. Unset: `agentos up` starts an embedded Postgres."""
    state_dir: Path = Path(".agentos")
    """Where the embedded servers keep their data and `agentos up` its runtime file."""
    tenant: str = "default"
    """Tenant used when an event does not name one."""
    nats_sync: Literal["always", "default"] = "always"
    """Embedded server fsync policy: `always` syncs every write before the ack (durable);
    `default` syncs every 2 minutes (faster, loses recent acked writes on power loss)."""
    events_max_age_days: int = Field(default=3650, ge=1)
    """How long the immutable event log keeps events."""
    claim_check_bytes: int = Field(default=64 * 1024, ge=1024)
    """Payloads larger than this go to the object store and the event carries a reference."""
    event_ids_ttl_s: float = Field(default=30 * 24 * 3600, ge=0)
    """How long each durable consumer remembers the event ids it handled (``AGENTOS_EVENT_IDS``):
    a later copy of an event with the same id is skipped, one with the same id and other content
    is dead-lettered. Keep it at least as long as any replay window upstream (the gateway's
    ``webhook_dedup_ttl_s``). 0 turns the check off (only JetStream's 120 s window de-duplicates)."""
    max_event_bytes: int = Field(default=256 * 1024, ge=4096)
    """An inline event larger than this is refused by consumers and dead-lettered."""
    publish_timeout_s: float = Field(default=30.0, gt=0)
    """How long a publish keeps retrying (same id, so never twice) while NATS is unreachable."""
    replicas: int = Field(default=1, ge=1, le=5)
    """Stream replicas (3 on a NATS cluster)."""
    nats_user: str | None = None
    """NATS user this process connects as (`agentos up` gives each service its own)."""
    nats_password: SecretStr | None = None
    """Password of ``nats_user``."""
    nats_inbox_prefix: str | None = None
    """Reply-subject prefix; default ``_INBOX.<nats_user>`` so a user's permissions can be limited
    to its own replies."""
    nats_auth: bool = True
    """`agentos up`: give the embedded NATS server per-service users with least-privilege
    permissions (the CLI connects as the admin user)."""
    provision: Literal["update", "create", "off"] = "update"
    """At service start: create the streams and buckets and bring their config up to date
    (``update``, needs admin rights), only create the missing ones (``create``: what least-privilege
    service users may do, so a fresh deployment bootstraps itself), or leave them (``off``)."""
    redact_events: bool = True
    """Redact personal data and secrets in every event payload this process publishes
    (identifier fields such as ``*_id`` are left alone)."""
    redact_stores: bool = True
    """Redact personal data and secrets before every other store this process writes: key-value
    buckets, dead letters (originals kept only sealed) and JSON sent to Postgres
    (:mod:`agentos_kernel.guard`)."""
    control: bool = True
    """Follow the kill switches (``AGENTOS_CONTROL``) in every service process."""

    def nats_credentials(self) -> tuple[str | None, str | None, str | None]:
        """(user, password, inbox prefix) to connect with.

        Without a configured user, a process pointed at the NATS server of a running `agentos up`
        in this state directory connects as that runtime's admin (its credentials file is
        readable by the operator who owns the state directory, and nobody else).
        """
        user = self.nats_user
        password = self.nats_password.get_secret_value() if self.nats_password else None
        if user is None:
            user, password = _runtime_admin(self.state_dir, self.nats_url)
        inbox = self.nats_inbox_prefix or (f"_INBOX.{user}" if user else None)
        return user, password, inbox


def _runtime_admin(state_dir: Path, url: str | None) -> tuple[str | None, str | None]:
    try:
        info = json.loads((state_dir / "runtime.json").read_text())
        if not url or info.get("nats_url") != url or not info.get("nats_admin_credentials"):
            return None, None
        creds = json.loads(Path(info["nats_admin_credentials"]).read_text())
        return str(creds["user"]), str(creds["password"])
    except (OSError, ValueError, KeyError, TypeError):
        return None, None
