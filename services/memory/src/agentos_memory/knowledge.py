"""Curated semantic memory: Markdown files, each one committed entry.

A file may start with YAML front matter::

    ---
    tags: [style, always]
    tenant: acme        # optional; default "*" (every tenant)
    ---
    # Heading
    Body...

The entry's id derives from the file name, so an edited file updates its entry on the next
start and an unchanged file is left alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import yaml
from agentos_kernel import ConfigError
from agentos_schemas.subjects import NamingError, check_token

from agentos_memory import store
from agentos_memory.logic import ANY_TENANT, CURATOR, EntryRow, semantic_entry_id

log = logging.getLogger("agentos.memory")

DEFAULT_DIR = Path(__file__).parent / "knowledge"
"""The curated files shipped with the service."""


@dataclass(frozen=True)
class Document:
    """One curated file, parsed."""

    name: str
    tenant: str
    tags: tuple[str, ...]
    content: str

    def row(self) -> EntryRow:
        """The committed semantic entry this file becomes."""
        return EntryRow(
            id=semantic_entry_id(self.name),
            tenant=self.tenant,
            kind="semantic",
            content=self.content,
            status="committed",
            tags=self.tags,
            source=self.name,
            reviewer=CURATOR,
        )


def _split(name: str, text: str) -> tuple[dict[str, Any], str]:
    if not text.startswith("---"):
        return {}, text
    head, sep, body = text[3:].partition("\n---")
    if not sep:
        raise ConfigError(f"{name!r}: front matter opened with '---' is never closed")
    try:
        meta = yaml.safe_load(head) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{name!r}: front matter is not valid YAML: {exc}") from None
    if not isinstance(meta, dict):
        raise ConfigError(f"{name!r}: front matter must be a mapping, got {type(meta).__name__}")
    return meta, body.partition("\n")[2]


def _tenant(name: str, value: Any) -> str:
    tenant = str(value) if value is not None else ANY_TENANT
    if tenant == ANY_TENANT:
        return tenant
    try:
        return check_token("tenant", tenant)
    except NamingError as exc:
        raise ConfigError(f"{name!r}: {exc}") from None


def parse(name: str, text: str) -> Document:
    """Parse one curated file; a malformed header raises :class:`ConfigError` naming the file."""
    meta, body = _split(name, text)
    tags = meta.get("tags") or []
    if isinstance(tags, str):
        tags = [tags]
    if not isinstance(tags, list):
        raise ConfigError(f"{name!r}: 'tags' must be a list, got {type(tags).__name__}")
    content = body.strip()
    if not content:
        raise ConfigError(f"{name!r}: the file has no content")
    return Document(
        name=name, tenant=_tenant(name, meta.get("tenant")), tags=tuple(str(t) for t in tags), content=content
    )


def read_dir(directory: Path) -> list[Document]:
    """Every ``*.md`` file of ``directory``, parsed, in name order."""
    if not directory.is_dir():
        raise ConfigError(f"knowledge directory {str(directory)!r} does not exist (AGENTOS_KNOWLEDGE_DIR)")
    return [parse(p.name, p.read_text(encoding="utf-8")) for p in sorted(directory.glob("*.md"))]


async def load(pool: asyncpg.Pool, directory: Path) -> int:
    """Upsert every curated file of ``directory`` as a committed semantic entry; returns how many changed."""
    documents = read_dir(directory)
    changed = 0
    async with pool.acquire() as conn, conn.transaction():
        for doc in documents:
            changed += await store.upsert_curated(conn, doc.row())
    log.info("memory: %d curated files in %s, %d new or changed", len(documents), directory, changed)
    return changed
