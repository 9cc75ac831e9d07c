"""Crypto-shredded fields in the projection: which keys were destroyed, and rendering them.

The projection stores each payload exactly as the log holds it, so a personal field is a
ciphertext token (``agentos-enc:v1:…``; see ``agentos_kernel.shred``), never the plaintext.
Erasure does not touch a row (the chain and ``verify`` are over those bytes); instead the
``erasure.recorded`` events in the projection say which keys are gone, and the readers render
the tokens sealed with them as ``[ERASED]``: the per-type views through the SQL function
``<schema>.personal(text)`` (``[ENCRYPTED]`` while the key lives — Postgres never holds keys),
and ``agentos audit export`` through :func:`render`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from agentos_kernel.db import Connection
from agentos_schemas import CATALOGUE
from agentos_schemas.events.erasure import ErasureRecorded
from agentos_schemas.personal import ERASED, TOKEN_PREFIX, personal_plan, render_erased

ERASURE_TYPE = ErasureRecorded.ce_type()
ENCRYPTED = "[ENCRYPTED]"


def personal_function_sql(schema: str) -> str:
    """``<schema>.personal(value)``: the value, or ``[ERASED]`` / ``[ENCRYPTED]`` for a token."""
    s = schema
    key = "split_part(split_part(value, ':', 3), '.', 1)"
    rev = "split_part(split_part(value, ':', 3), '.', 2)"
    return f"""CREATE OR REPLACE FUNCTION {s}.personal(value text) RETURNS text LANGUAGE sql STABLE AS $$
        SELECT CASE WHEN value IS NULL OR left(value, {len(TOKEN_PREFIX)}) <> '{TOKEN_PREFIX}' THEN value
            WHEN EXISTS (SELECT 1 FROM {s}.events e WHERE e.type = '{ERASURE_TYPE}'
                         AND e.data->>'key' = {key}
                         AND (e.data->>'revision')::bigint >= nullif({rev}, '')::bigint)
            THEN '{ERASED}' ELSE '{ENCRYPTED}' END $$"""


async def erased_keys(conn: Connection, schema: str) -> dict[str, int]:
    """Key name -> the highest key revision an ``erasure.recorded`` event says was destroyed."""
    rows = await conn.fetch(
        f"SELECT data->>'key' AS key, max((data->>'revision')::bigint) AS revision FROM {schema}.events "
        "WHERE type = $1 GROUP BY 1",
        ERASURE_TYPE,
    )
    return {r["key"]: int(r["revision"] or 0) for r in rows}


def render(type_: str, data: str, erased: Mapping[str, int]) -> str:
    """A payload's JSON text with the tokens of destroyed keys replaced by ``[ERASED]``."""
    if TOKEN_PREFIX not in data or not erased:
        return data
    cls = CATALOGUE.get(type_)
    plan = personal_plan(cls) if cls is not None else None
    if plan is None:
        return data
    obj = json.loads(data)
    return json.dumps(obj, ensure_ascii=False) if render_erased(obj, plan, erased) else data


__all__ = ["ENCRYPTED", "ERASURE_TYPE", "erased_keys", "personal_function_sql", "render"]
