"""The Merkle tree, its proofs and the standalone verifier against RFC 9162 §2.1 computed from the
RFC's own recursive definitions (MTH, PATH, PROOF), for every size and index up to N; and mutated
proofs, which must all fail."""

from __future__ import annotations

import hashlib

import pytest
from agentos_audit import merkle
from agentos_verify import VerificationError, root_from_inclusion, verify_consistency, verify_inclusion

N = 70
ENTRIES = [f"entry {i}".encode() * (i % 3 + 1) for i in range(N)]


def mth(d: list[bytes]) -> bytes:
    """RFC 9162 §2.1.1, literally."""
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return hashlib.sha256(b"\x00" + d[0]).digest()
    k = 1
    while k * 2 < len(d):
        k *= 2
    return hashlib.sha256(b"\x01" + mth(d[:k]) + mth(d[k:])).digest()


def path(m: int, d: list[bytes]) -> list[bytes]:
    """RFC 9162 §2.1.3.1 PATH(m, D[n])."""
    if len(d) == 1:
        return []
    k = 1
    while k * 2 < len(d):
        k *= 2
    if m < k:
        return [*path(m, d[:k]), mth(d[k:])]
    return [*path(m - k, d[k:]), mth(d[:k])]


def subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    """RFC 9162 §2.1.4.1 SUBPROOF(m, D[n], b)."""
    if m == len(d):
        return [] if b else [mth(d)]
    k = 1
    while k * 2 < len(d):
        k *= 2
    if m <= k:
        return [*subproof(m, d[:k], b), mth(d[k:])]
    return [*subproof(m - k, d[k:], False), mth(d[:k])]


def stored_tree() -> dict[merkle.Node, bytes]:
    frontier, nodes = merkle.Frontier(), {}
    for entry in ENTRIES:  # one at a time and in batches give the same nodes
        frontier, rows = frontier.extend([merkle.leaf_hash(entry)])
        nodes.update({(lv, i): h for lv, i, h in rows})
    return nodes


NODES = stored_tree()


def prod_path(m: int, n: int) -> list[bytes]:
    return [merkle.hash_range(NODES, a, b) for a, b in merkle.inclusion_ranges(m, n)]


def prod_proof(m: int, n: int) -> list[bytes]:
    return [merkle.hash_range(NODES, a, b) for a, b in merkle.consistency_ranges(m, n)]


def test_roots_and_frontiers_match_the_rfc() -> None:
    frontier = merkle.Frontier()
    assert frontier.root() == mth([])
    for n in range(1, N + 1):
        frontier, _ = frontier.extend([merkle.leaf_hash(ENTRIES[n - 1])])
        assert frontier.root() == mth(ENTRIES[:n]) == merkle.hash_range(NODES, 0, n), n
        assert frontier.hashes == tuple(NODES[x] for x in merkle.frontier_nodes(n))
    batched, rows = merkle.Frontier().extend(merkle.leaf_hash(e) for e in ENTRIES)
    assert batched == frontier and {(lv, i): h for lv, i, h in rows} == NODES


def test_inclusion_paths_match_the_rfc_and_verify() -> None:
    for n in range(1, N + 1):
        root = mth(ENTRIES[:n])
        for m in range(n):
            expected = path(m, ENTRIES[:n])
            assert prod_path(m, n) == expected, (m, n)
            verify_inclusion(merkle.leaf_hash(ENTRIES[m]), m, n, expected, root)


def test_consistency_proofs_match_the_rfc_and_verify() -> None:
    for n in range(1, N + 1):
        for m in range(1, n + 1):
            expected = subproof(m, ENTRIES[:n], True)
            assert prod_proof(m, n) == expected, (m, n)
            verify_consistency(m, n, mth(ENTRIES[:m]), mth(ENTRIES[:n]), expected)


def flip(h: bytes, bit: int) -> bytes:
    return h[: bit // 8] + bytes([h[bit // 8] ^ (1 << bit % 8)]) + h[bit // 8 + 1 :]


def inclusion_mutations(m: int, n: int) -> list[tuple[str, bytes, int, int, list[bytes], bytes]]:
    leaf, p, root = merkle.leaf_hash(ENTRIES[m]), path(m, ENTRIES[:n]), mth(ENTRIES[:n])
    out = [("leaf bit", flip(leaf, 7), m, n, p, root), ("root bit", leaf, m, n, p, flip(root, 200))]
    out += [(f"path[{i}] bit", leaf, m, n, [*p[:i], flip(h, 13 * i % 256), *p[i + 1 :]], root) for i, h in enumerate(p)]
    out += [("index+1", leaf, m + 1, n, p, root), ("index-1", leaf, m - 1, n, p, root)] if m else []
    # (A path alone does not bind the tree size: PATH(0, 3) also leads to the root for size 4. The
    # size is bound by the signed checkpoint, so the proof documents' size mutations are tested there.)
    out += [("truncated", leaf, m, n, p[:-1], root)] if p else []
    out += [("extended", leaf, m, n, [*p, root], root), ("other root", leaf, m, n, p, mth(ENTRIES[: n - 1]))]
    return out


def test_mutated_inclusion_proofs_fail() -> None:
    for n in range(2, 40):
        for m in range(n):
            for name, leaf, index, size, p, root in inclusion_mutations(m, n):
                with pytest.raises(VerificationError):
                    verify_inclusion(leaf, index, size, p, root)
                    pytest.fail(f"{name} passed for leaf {m} of {n}")


def test_mutated_consistency_proofs_fail() -> None:
    for n in range(2, 40):
        for m in range(1, n):
            p, a, b = subproof(m, ENTRIES[:n], True), mth(ENTRIES[:m]), mth(ENTRIES[:n])
            cases = [("swapped roots", m, n, b, a, p), ("old root bit", m, n, flip(a, 1), b, p)]
            cases += [("new root bit", m, n, a, flip(b, 255), p), ("truncated", m, n, a, b, p[:-1])]
            cases += [("extended", m, n, a, b, [*p, a]), ("old size+1", m + 1, n, a, b, p)]
            cases += [("old size-1", m - 1, n, a, b, p)]  # (the new size: bound by its checkpoint)
            cases += [(f"path[{i}] bit", m, n, a, b, [*p[:i], flip(h, 77), *p[i + 1 :]]) for i, h in enumerate(p)]
            for name, old, new, ra, rb, q in cases:
                with pytest.raises(VerificationError):
                    verify_consistency(old, new, ra, rb, q)
                    pytest.fail(f"{name} passed for {m} -> {n}")


def test_an_index_outside_the_tree_fails() -> None:
    with pytest.raises(VerificationError):
        root_from_inclusion(merkle.leaf_hash(b"x"), 1, 1, [])
