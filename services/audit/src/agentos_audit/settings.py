"""Settings of the audit service (``AGENTOS_AUDIT_*`` environment variables)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class AuditSettings(BaseSettings):
    """What the audit service reads besides the kernel's settings."""

    model_config = SettingsConfigDict(env_prefix="AGENTOS_AUDIT_", extra="ignore", use_attribute_docstrings=True)

    key_file: Path | None = None
    """Ed25519 private key (PEM) that signs checkpoints; created on first start. Unset:
    ``<AGENTOS_STATE_DIR>/audit/audit-ed25519.pem``. The public key is exported as ``<key_file>.pub``."""
    schema_name: str = Field(default="audit", pattern=r"^[a-z_][a-z0-9_]{0,40}$")
    """Postgres schema of the projection (``AGENTOS_AUDIT_SCHEMA_NAME``)."""
    batch: int = Field(default=512, ge=1, le=10_000)
    """Messages fetched, validated and committed per transaction."""
    batch_wait_s: float = Field(default=0.05, ge=0, le=1)
    """How long a batch waits after its first message for more to join it (while the previous batch
    is written): fewer, larger transactions for a projection at most this much later."""
    checkpoint_every: int = Field(default=1000, ge=1)
    """Sign a checkpoint of the Merkle tree each time the log crosses a multiple of this many sequences."""
    checkpoint_idle_s: float = Field(default=10.0, gt=0)
    """Sign the head after this many idle seconds, so a quiet log's tail is covered too."""
    checkpoint_interval_s: float = Field(default=60.0, gt=0)
    """While the log grows, sign the head at least this often (besides every ``checkpoint_every``)."""
    origin: str = Field(default="agentos.local/audit", pattern=r"^[^\s+]+$")
    """The log's name in its checkpoints (their first line) and the signing key's name: make it
    unique to this deployment, e.g. ``example.com/agentos/audit``."""
    witness_file: Path | None = None
    """A file every signed checkpoint is appended to (one JSON line each), kept where whoever can
    write to Postgres cannot (another host, a WORM volume); ``agentos audit verify`` checks it."""
    witness_url: str | None = None
    """A URL every signed checkpoint note is POSTed to (``text/plain``), e.g. a witness service."""

    def key_path(self, state_dir: Path) -> Path:
        """The key file in effect."""
        return self.key_file or state_dir / "audit" / "audit-ed25519.pem"


__all__ = ["AuditSettings"]
