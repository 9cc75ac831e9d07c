"""Credentials for tools, handed over at the moment a tool runs — never to the model.

A secret is a file named after it in the secret store directory (``AGENTOS_SECRETS_DIR``, by
default ``<state dir>/secrets``; the layout Docker and Kubernetes use for mounted secrets). A
tool asks for one while it executes::

    from agentos_kernel.secrets import secret
    headers = {"Authorization": f"Bearer {secret('crm_api_token')}"}

or a tool's arguments can name secrets as ``{"$secret": "crm_api_token"}`` and the runner calls
:func:`resolve` just before running the tool. The model only ever sees the *name*. Every value
the store hands out — and, at service start, every value it holds — is registered with the
redactor, so if a tool echoes one back it becomes ``[SECRET]`` in prompts, events and logs.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from agentos_kernel.exceptions import ConfigError
from agentos_kernel.redact import redactor

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
REF_KEY = "$secret"


class SecretNotFound(ConfigError):
    """The named secret is not in the store."""


def _check(name: str) -> str:
    if not _NAME.match(name or ""):
        raise ConfigError(f"secret name {name!r} must be letters, digits, '_', '.', '-' (no paths)")
    return name


class SecretStore:
    """A folder of one-file-per-secret values (mode 0600 in a 0700 folder when written here)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @classmethod
    def default(cls) -> SecretStore:
        """``AGENTOS_SECRETS_DIR``, else ``<AGENTOS_STATE_DIR or .agentos>/secrets``."""
        explicit = os.environ.get("AGENTOS_SECRETS_DIR")
        if explicit:
            return cls(Path(explicit))
        return cls(Path(os.environ.get("AGENTOS_STATE_DIR", ".agentos")) / "secrets")

    def get(self, name: str) -> str:
        """The value of secret ``name`` (a trailing newline is dropped); registered for redaction."""
        path = self.root / _check(name)
        try:
            value = path.read_text().rstrip("\r\n")
        except FileNotFoundError:
            raise SecretNotFound(f"secret {name!r} is not in the secret store ({self.root})") from None
        redactor().register(value)
        return value

    def put(self, name: str, value: str) -> None:
        """Store a secret (created owner-only) and register its value for redaction."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.root / _check(name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(value)
        redactor().register(value)

    def names(self) -> list[str]:
        """The names of the secrets held (values are not read)."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_file() and _NAME.match(p.name))

    def register_all(self) -> int:
        """Register every value held with the redactor; returns how many were read."""
        count = 0
        for name in self.names():
            try:
                self.get(name)
                count += 1
            except (OSError, UnicodeDecodeError):
                continue
        return count


def secret(name: str) -> str:
    """The value of secret ``name`` from the default store (call it inside a tool, at run time)."""
    return SecretStore.default().get(name)


def resolve(value: Any, store: SecretStore | None = None) -> Any:
    """``value`` with every ``{"$secret": "<name>"}`` replaced by that secret's value (recursively)."""
    store = store or SecretStore.default()
    if isinstance(value, dict):
        if set(value) == {REF_KEY} and isinstance(value[REF_KEY], str):
            return store.get(value[REF_KEY])
        return {k: resolve(v, store) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [resolve(v, store) for v in value]
    return value
