"""The audit log's Merkle tree (RFC 9162 §2.1): pure functions, no I/O.

Leaf ``i`` is the chain entry of stream sequence ``tree_base + i``; its *entry* is the entry's
canonical bytes (:mod:`agentos_audit.canonical`: the stored form, so a crypto-shredded field is
hashed as its ciphertext and erasing its key changes no hash). Leaf hash ``SHA-256(0x00 ||
entry)``, node hash ``SHA-256(0x01 || left || right)``; the tree of ``n`` leaves is RFC 9162's
MTH, whose left subtree holds the largest power of two below ``n`` leaves.

The tree is stored as its *complete* subtrees: node ``(level, idx)`` is the hash of leaves
``idx·2^level .. (idx+1)·2^level - 1``, written once when its last leaf arrives. Every subtree
RFC 9162's PATH and PROOF name is either such a node or the right edge of a tree, which is the
hash of at most ``log2 n`` of them, so a proof reads O(log n) nodes (:func:`inclusion_ranges`,
:func:`consistency_ranges`, :func:`range_nodes`). A :class:`Frontier` (the complete subtrees of
the tree's binary decomposition) is all the writer needs to append.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import NamedTuple

Node = tuple[int, int]
"""(level, idx): the complete subtree of leaves ``idx·2^level .. (idx+1)·2^level - 1``."""
Range = tuple[int, int]
"""[start, end) of leaves, ``start`` aligned so that the range is one RFC 9162 subtree."""


def leaf_hash(entry: bytes) -> bytes:
    """``SHA-256(0x00 || entry)``."""
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(b"\x01" + left + right).digest()


EMPTY_ROOT = hashlib.sha256(b"").digest()
"""MTH of the empty tree."""


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def range_nodes(start: int, end: int) -> list[Node]:
    """The complete subtrees whose hashes make up the range, largest (leftmost) first."""
    out: list[Node] = []
    while start < end:
        level = (end - start).bit_length() - 1
        if start:
            level = min(level, (start & -start).bit_length() - 1)
        out.append((level, start >> level))
        start += 1 << level
    return out


def hash_range(nodes: Mapping[Node, bytes], start: int, end: int) -> bytes:
    """MTH of leaves [start, end) from stored complete subtrees (right to left, as RFC 9162 folds)."""
    parts = [nodes[n] for n in range_nodes(start, end)]
    if not parts:
        return EMPTY_ROOT
    root = parts[-1]
    for part in reversed(parts[:-1]):
        root = node_hash(part, root)
    return root


def inclusion_ranges(index: int, size: int) -> list[Range]:
    """The subtrees of RFC 9162's PATH(index, D[0:size]), leaf level first."""
    out: list[Range] = []
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            out.append((start + k, end))
            end = start + k
        else:
            out.append((start, start + k))
            start += k
    out.reverse()
    return out


def consistency_ranges(old: int, size: int) -> list[Range]:
    """The subtrees of RFC 9162's PROOF(old, D[0:size]), in proof order (0 < old <= size)."""
    out: list[Range] = []
    start, end, m, whole = 0, size, old, True
    while m != end - start:
        k = _split(end - start)
        if m <= k:
            out.append((start + k, end))
            end = start + k
        else:
            out.append((start, start + k))
            start, m, whole = start + k, m - k, False
    if not whole:
        out.append((start, end))
    out.reverse()
    return out


def needed(ranges: Iterable[Range]) -> set[Node]:
    """Every stored node that hashing ``ranges`` reads."""
    return {n for start, end in ranges for n in range_nodes(start, end)}


class Frontier(NamedTuple):
    """A tree of ``size`` leaves as the hashes of its decomposition's complete subtrees
    (largest first): enough to append leaves and to compute the root."""

    size: int = 0
    hashes: tuple[bytes, ...] = ()

    def root(self) -> bytes:
        """MTH of the tree."""
        if not self.hashes:
            return EMPTY_ROOT
        root = self.hashes[-1]
        for part in reversed(self.hashes[:-1]):
            root = node_hash(part, root)
        return root

    def extend(self, leaves: Iterable[bytes]) -> tuple[Frontier, list[tuple[int, int, bytes]]]:
        """The tree with ``leaves`` (leaf hashes) appended, and the new complete nodes
        ``(level, idx, hash)`` in the order they complete."""
        size, stack, rows = self.size, list(self.hashes), []
        for h in leaves:
            level, idx = 0, size
            rows.append((0, idx, h))
            while idx & 1:
                h, level, idx = node_hash(stack.pop(), h), level + 1, idx >> 1
                rows.append((level, idx, h))
            stack.append(h)
            size += 1
        return Frontier(size, tuple(stack)), rows


def frontier_nodes(size: int) -> list[Node]:
    """The stored nodes a :class:`Frontier` of ``size`` leaves is made of."""
    return range_nodes(0, size)


__all__ = [
    "EMPTY_ROOT",
    "Frontier",
    "Node",
    "Range",
    "consistency_ranges",
    "frontier_nodes",
    "hash_range",
    "inclusion_ranges",
    "leaf_hash",
    "needed",
    "node_hash",
    "range_nodes",
]
