"""Publishing the tree's signed checkpoints outside the database that holds them: into the log
itself (an ``audit.checkpoint`` event) and to an optional witness (a file the notes are appended
to, one JSON line each, or a URL each note is POSTed to). An edit of Postgres then cannot hide
behind checkpoints of its own: ``verify`` holds the database's tree against the log's and the
witness's checkpoints.

A checkpoint row is marked published (``log_seq``) once the log took it; one that was not (NATS
away, a restart in between) is published the next time round, with the same event id.
"""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path
from typing import Any

import asyncpg
from agentos_kernel import Bus
from agentos_kernel.db import Connection
from agentos_schemas import derived_event_id
from agentos_schemas.events.audit import AuditCheckpoint

from agentos_audit.tree import tree_base

log = logging.getLogger("agentos.audit")
CHECKPOINT_TYPE = AuditCheckpoint.ce_type()


def witness_line(size: int, note: str) -> str:
    """One line of a witness file."""
    return json.dumps({"tree_size": size, "note": note}, ensure_ascii=False) + "\n"


def read_witness(path: Path) -> list[tuple[int, Any, str]]:
    """(line number, tree size, note) of each line of a witness file (size None if unreadable)."""
    out: list[tuple[int, Any, str]] = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        try:
            doc = json.loads(line)
            out.append((number, doc.get("tree_size"), str(doc.get("note", ""))))
        except (ValueError, AttributeError):
            out.append((number, None, line))
    return out


class Publisher:
    """Publishes unpublished checkpoints of one schema to the log and the witness."""

    def __init__(
        self,
        bus: Bus,
        schema: str,
        origin: str,
        *,
        witness_file: Path | None = None,
        witness_url: str | None = None,
        status: dict[str, Any] | None = None,
    ) -> None:
        self.bus, self.schema, self.origin = bus, schema, origin
        self.witness_file, self.witness_url = witness_file, witness_url
        self.status = status if status is not None else {}

    async def flush(self, conn: Connection | asyncpg.Pool) -> int:
        """Publish every checkpoint not yet in the log, oldest first; returns how many."""
        rows = await conn.fetch(
            f"SELECT tree_size, root, note FROM {self.schema}.tree_checkpoints WHERE log_seq IS NULL ORDER BY tree_size"
        )
        if not rows:
            return 0
        base = await tree_base(conn, self.schema) or 1
        for r in rows:
            size, root, note = int(r["tree_size"]), bytes(r["root"]), str(r["note"])
            data = AuditCheckpoint(
                origin=self.origin,
                projection=self.schema,
                tree_size=size,
                root_hash=base64.b64encode(root).decode(),
                first_seq=base,
                last_seq=base + size - 1,
                note=note,
            )
            ack = await self.bus.publish(self.bus.new(data, id=derived_event_id("audit-checkpoint", note)))
            await self._witness(size, note)
            await conn.execute(
                f"UPDATE {self.schema}.tree_checkpoints SET log_seq = $2 WHERE tree_size = $1", size, ack.seq
            )
            self.status["audit_checkpoint_size"] = size
        return len(rows)

    async def _witness(self, size: int, note: str) -> None:
        """Hand the note to the witness; a witness that cannot take it is reported, not waited for."""
        import httpx  # here: `agentos status` imports this module, and must stay light

        try:
            if self.witness_file is not None:
                self.witness_file.parent.mkdir(parents=True, exist_ok=True)
                with self.witness_file.open("a", encoding="utf-8") as f:
                    f.write(witness_line(size, note))
            if self.witness_url is not None:
                async with httpx.AsyncClient(timeout=5.0) as client:
                    reply = await client.post(
                        self.witness_url, content=note.encode(), headers={"content-type": "text/plain"}
                    )
                    reply.raise_for_status()
        except (OSError, ValueError, httpx.HTTPError) as exc:
            self.status["audit_witness_error"] = f"{type(exc).__name__}: {exc}"[:300]
            log.warning("audit: the witness did not take checkpoint %d: %s", size, exc)


__all__ = ["CHECKPOINT_TYPE", "Publisher", "read_witness", "witness_line"]
