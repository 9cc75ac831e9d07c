"""`agentos audit prove`: inclusion and consistency proofs of a real projection, checked by the
standalone verifier (in process and as `python -m agentos_verify`); doctored proofs fail."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from agentos_audit.projector import Projector
from agentos_audit.prove import checkpoint_now, consistency_proof, inclusion_proof
from agentos_audit.publish import Publisher
from agentos_audit.signing import Ed25519PrivateKey, Signer, vkey
from agentos_kernel import Bus
from agentos_kernel.exceptions import InvalidInput
from agentos_kernel.testing import unique
from agentos_verify import VerificationError, Verifier, check

from tests.audit.conftest import caught_up, publish_all
from tests.audit.workload import build

ORIGIN = "agentos.local/audit"
VERIFY_SRC = Path(__file__).resolve().parents[2] / "services" / "verify" / "src"


async def proven(bus: Bus, pool: asyncpg.Pool, audit: Projector, tenant: str) -> list[str]:
    await publish_all(bus, build(bus, tenant, unique("g")).events)
    await caught_up(bus, pool, audit.schema)
    await audit.stop()  # signs the head
    rows = await pool.fetch(f"SELECT id FROM {audit.schema}.events WHERE tenant = $1 ORDER BY seq", tenant)
    return [r["id"] for r in rows]


def standalone(doc: dict[str, Any], key: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`python -m agentos_verify` with nothing of AgentOS on its path but the verifier itself."""
    proof = tmp_path / "proof.json"
    proof.write_text(json.dumps(doc))
    env = {"PYTHONPATH": str(VERIFY_SRC), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-m", "agentos_verify", str(proof), "--key", key], env=env, capture_output=True, text=True
    )


async def test_inclusion_proofs_verify_standalone_and_doctored_ones_fail(
    bus: Bus, pool: asyncpg.Pool, audit: Projector, tenant: str, signer: Signer, tmp_path: Path
) -> None:
    ids = await proven(bus, pool, audit, tenant)
    key_text = vkey(ORIGIN, signer.public)
    key = Verifier.parse(key_text)
    for event_id in ids:
        doc = await inclusion_proof(pool, audit.schema, event_id)
        assert check(doc, key, ORIGIN)["event_id"] == event_id
    ran = standalone(doc, key_text, tmp_path)
    assert ran.returncode == 0 and json.loads(ran.stdout)["ok"], ran.stdout + ran.stderr

    doctored: list[dict[str, Any]] = []
    for field, value in [("tree_size", doc["tree_size"] + 1), ("leaf_index", doc["leaf_index"] - 1)]:
        doctored.append({**doc, field: value})
    doctored.append({**doc, "entry": doc["entry"][:-8] + "AAAAAAA="})
    doctored.append({**doc, "path": doc["path"][:-1]})
    doctored.append({**doc, "path": [*doc["path"], doc["path"][0]]})
    doctored.append({**doc, "event_id": ids[0] if doc["event_id"] != ids[0] else ids[1]})
    lines = doc["checkpoint"].split("\n")
    doctored.append({**doc, "checkpoint": "\n".join([lines[0], str(int(lines[1]) + 1), *lines[2:]])})
    forger = Signer(Ed25519PrivateKey.generate())
    root = __import__("base64").b64decode(lines[2])
    doctored.append({**doc, "checkpoint": forger.note(ORIGIN, doc["tree_size"], root)})
    for bad in doctored:
        with pytest.raises(VerificationError):
            check(bad, key, ORIGIN)
    ran = standalone(doctored[0], key_text, tmp_path)
    assert ran.returncode == 1 and not json.loads(ran.stdout)["ok"], ran.stdout + ran.stderr


async def test_consistency_proofs_between_checkpoints(
    bus: Bus, pool: asyncpg.Pool, audit: Projector, tenant: str, signer: Signer
) -> None:
    s = audit.schema
    for _ in range(2):  # on demand, besides the projector's own
        await publish_all(bus, build(bus, tenant, unique("g")).events)
        await caught_up(bus, pool, s)
        await checkpoint_now(bus, pool, s, signer, Publisher(bus, s, ORIGIN))
    sizes = [r["tree_size"] for r in await pool.fetch(f"SELECT tree_size FROM {s}.tree_checkpoints ORDER BY 1")]
    assert len(sizes) >= 2
    key = Verifier.parse(vkey(ORIGIN, signer.public))
    for old in sizes:
        doc = await consistency_proof(pool, s, old, sizes[-1])
        assert check(doc, key, ORIGIN)["new_size"] == sizes[-1]
    swapped = copy.deepcopy(doc := await consistency_proof(pool, s, sizes[0], sizes[-1]))
    swapped["old"], swapped["new"] = doc["new"], doc["old"]
    with pytest.raises(VerificationError):
        check(swapped, key, ORIGIN)
    with pytest.raises(InvalidInput):
        await consistency_proof(pool, s, sizes[0] + 1 if sizes[0] + 1 not in sizes else sizes[-1] + 5, sizes[-1])


async def test_a_proof_of_an_unknown_event_is_a_clear_error(
    bus: Bus, pool: asyncpg.Pool, audit: Projector, tenant: str
) -> None:
    await proven(bus, pool, audit, tenant)
    with pytest.raises(InvalidInput, match="no event 'nope'"):
        await inclusion_proof(pool, audit.schema, "nope")
