"""Audit facts: the audit log's signed Merkle-tree checkpoints, published into the log itself
(``docs/auditing.md``), so that an edit of the audit database cannot hide behind checkpoints that
only the database holds."""

from __future__ import annotations

from agentos_schemas.events._base import EventData


class AuditCheckpoint(EventData):
    """The audit service signed a checkpoint of its Merkle tree over the log: the first
    ``tree_size`` stream entries it projected (from ``first_seq`` to ``last_seq``) have the root
    hash ``root_hash``. ``note`` is the checkpoint itself, a C2SP signed note that
    ``python -m agentos_verify`` checks against the auditor's trusted key."""

    event_name = "audit.checkpoint"

    origin: str
    """The log's name, the checkpoint's first line and the signing key's name."""
    projection: str
    """The Postgres schema of the projection whose tree this is (``AGENTOS_AUDIT_SCHEMA_NAME``)."""
    tree_size: int
    """How many leaves (stream entries) the tree has."""
    root_hash: str
    """The tree's RFC 9162 root hash, base64."""
    first_seq: int
    """The stream sequence of leaf 0."""
    last_seq: int
    """The stream sequence of the tree's last leaf."""
    note: str
    """The signed checkpoint note (C2SP tlog-checkpoint in a C2SP signed note)."""
