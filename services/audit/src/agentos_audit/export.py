"""``agentos audit export``: the projection of a time range as JSON Lines or Parquet.

Each record is one event: every ``audit.events`` column (``data`` as the payload object in JSONL,
as JSON text in Parquet) plus ``chain_hash``, the hex chain hash at its stream sequence, so an
exported record can be checked against a later ``verify``. Records are in stream order.

Personal fields are exported as stored — ciphertext tokens — and as ``[ERASED]`` once their data
subject's key was destroyed (``agentos audit erase``; :mod:`agentos_audit.erasure`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any

import asyncpg
import msgspec
from agentos_schemas.personal import TOKEN_PREFIX

from agentos_audit import erasure
from agentos_audit.derive import COLUMNS
from agentos_audit.schema import check_schema

_encoder = msgspec.json.Encoder()
_SQL = """SELECT {cols}, e.data::text AS data, c.hash AS chain_hash
FROM {s}.events e JOIN {s}.chain c ON c.seq = e.seq
WHERE ($1::timestamptz IS NULL OR e.time >= $1) AND ($2::timestamptz IS NULL OR e.time < $2)
  AND ($3::text IS NULL OR e.tenant = $3)
  AND ($4::bigint IS NULL OR e.seq >= $4) AND ($5::bigint IS NULL OR e.seq < $5)
ORDER BY e.seq"""


async def records(
    pool: asyncpg.Pool,
    schema: str,
    since: dt.datetime | None,
    until: dt.datetime | None,
    tenant: str | None = None,
    *,
    seq_from: int | None = None,
    seq_to: int | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """The exported records, in stream order (``data`` as JSON text): events whose own ``time`` is
    in ``[since, until)`` and whose stream sequence is in ``[seq_from, seq_to)``, each bound
    optional (the CLI turns log times into sequence bounds)."""
    sql = _SQL.format(cols=", ".join(f"e.{c}" for c in COLUMNS[:-1]), s=check_schema(schema))
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        erased = await erasure.erased_keys(conn, check_schema(schema))
        async for r in conn.cursor(sql, since, until, tenant, seq_from, seq_to, prefetch=2000):
            record = dict(r)
            record["chain_hash"] = bytes(record["chain_hash"]).hex()
            if TOKEN_PREFIX in record["data"]:
                record["data"] = erasure.render(record["type"], record["data"], erased)
            yield record


async def write_jsonl(out: IO[bytes], rows: AsyncIterator[dict[str, Any]]) -> int:
    """One JSON object per line; returns how many."""
    n = 0
    async for record in rows:
        record["data"] = msgspec.Raw(record["data"].encode())
        if isinstance(record.get("extensions"), str):
            record["extensions"] = msgspec.Raw(record["extensions"].encode())
        out.write(_encoder.encode(record) + b"\n")
        n += 1
    return n


def _parquet_schema() -> Any:
    import pyarrow as pa

    text, strings = pa.string(), pa.list_(pa.string())
    types = {
        "seq": pa.int64(),
        "time": pa.timestamp("us", tz="UTC"),
        "models": strings,
        "tools": strings,
        "tags": strings,
        "cost_usd": pa.float64(),
        "tokens": pa.int64(),
    }
    return pa.schema([(c, types.get(c, text)) for c in (*COLUMNS, "chain_hash")])


async def write_parquet(path: Path, rows: AsyncIterator[dict[str, Any]], *, batch: int = 20_000) -> int:
    """A Parquet file (zstd) written in row groups of ``batch``; returns how many records."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _parquet_schema()
    n, chunk = 0, []
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        async for record in rows:
            chunk.append(record)
            if len(chunk) >= batch:
                writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
                n, chunk = n + len(chunk), []
        if chunk or n == 0:
            writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
            n += len(chunk)
    return n


__all__ = ["records", "write_jsonl", "write_parquet"]
