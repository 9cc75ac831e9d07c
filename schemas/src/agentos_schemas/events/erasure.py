"""Erasure facts: a data subject's personal data was crypto-shredded (``docs/erasure.md``)."""

from __future__ import annotations

from agentos_schemas.events._base import EventData


class ErasureRecorded(EventData):
    """A data subject's encryption key was destroyed: every personal field sealed with it (at or
    before ``revision``) now reads as ``[ERASED]``. Carries no personal data: the subject is named
    only by its key name, a hash of tenant and subject id."""

    event_name = "erasure.recorded"

    key: str
    """The key name (32 hex digits: sha256 of ``<tenant>\\0<subject id>``, truncated)."""
    revision: int
    """The key-store revision of the key destroyed (0 when no key existed: nothing was sealed)."""
    reason: str = ""
    """Why, as the operator gave it (a ticket or request reference, not the person's details)."""
