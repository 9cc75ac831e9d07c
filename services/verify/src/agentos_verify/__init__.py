"""agentos_verify: check an AgentOS audit proof without trusting (or installing) AgentOS.

Standalone: the standard library and ``cryptography`` only, nothing of AgentOS. It checks

- a signed checkpoint: a C2SP ``tlog-checkpoint`` (origin, tree size, base64 root hash) in a
  C2SP signed note, signed with Ed25519 by the key the auditor trusts (a ``vkey``
  ``<name>+<hex key id>+<base64(0x01 || public key)>``, never a key taken from the proof);
- an inclusion proof: the entry (the log's stored bytes of one event) is leaf ``leaf_index`` of
  the tree of ``tree_size`` leaves whose root the checkpoint signs (RFC 9162 §2.1.3.2);
- a consistency proof: the tree of one checkpoint is a prefix of the tree of a later one
  (RFC 9162 §2.1.4.2), so nothing the first covered was changed or removed since.

Hashes are RFC 9162's: leaf ``SHA-256(0x00 || entry)``, node ``SHA-256(0x01 || left || right)``.
Run ``python -m agentos_verify PROOF.json --key VKEY`` (``--help`` for more).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from typing import Any, cast

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

PROOF_FORMAT = "agentos-audit-proof/v1"
_ED25519 = b"\x01"
_DASH = "\u2014"
_BINARY_MAGIC = b"\x00ce-binary\x00"


class VerificationError(Exception):
    """The proof, the checkpoint or the key does not verify; the message says what failed."""


def leaf_hash(entry: bytes) -> bytes:
    """RFC 9162 leaf hash: ``SHA-256(0x00 || entry)``."""
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 interior node hash: ``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise VerificationError(f"{what} is not base64") from None


# -- keys and signed notes (C2SP signed-note) -------------------------------------------------------


def key_id(name: str, public: bytes) -> bytes:
    """The 4-byte key id of an Ed25519 note key: ``SHA-256(name || 0x0A || 0x01 || public)[:4]``."""
    return hashlib.sha256(name.encode() + b"\n" + _ED25519 + public).digest()[:4]


@dataclass(frozen=True)
class Verifier:
    """A trusted note verifier key."""

    name: str
    id: bytes
    public: bytes

    @classmethod
    def parse(cls, vkey: str) -> Verifier:
        """A ``vkey`` (``<name>+<hex key id>+<base64(0x01 || public key)>``)."""
        parts = vkey.strip().split("+", 2)
        if len(parts) != 3 or not parts[0]:
            raise VerificationError("a verifier key is <name>+<hex key id>+<base64 key>")
        name, hex_id, b64 = parts
        raw = _b64(b64, "the verifier key")
        if len(raw) != 33 or raw[:1] != _ED25519:
            raise VerificationError("the verifier key is not an Ed25519 key (0x01 || 32 bytes)")
        if key_id(name, raw[1:]).hex() != hex_id.lower():
            raise VerificationError(f"the verifier key's id {hex_id} does not match its name and key")
        return cls(name, key_id(name, raw[1:]), raw[1:])

    def check(self, text: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is this key's Ed25519 signature of ``text``."""
        try:
            Ed25519PublicKey.from_public_bytes(self.public).verify(signature, text)
        except InvalidSignature:
            return False
        return True


def open_note(note: str, key: Verifier) -> str:
    """The text of a signed note whose signature by ``key`` is valid; raises otherwise."""
    text, sep, block = note.rpartition("\n\n")
    if not sep or not block.endswith("\n"):
        raise VerificationError("not a signed note: no blank line before the signature lines")
    text += "\n"
    for line in block[:-1].split("\n"):
        dash, _, rest = line.partition(" ")
        name, _, sig_b64 = rest.partition(" ")
        if dash != _DASH or not name or not sig_b64:
            raise VerificationError(f"not a signature line: {line!r}")
        sig = _b64(sig_b64, "a note signature")
        if name == key.name and sig[:4] == key.id:
            if len(sig) == 68 and key.check(text.encode(), sig[4:]):
                return text
            raise VerificationError(f"the signature by {key.name} is not valid for this note")
    raise VerificationError(f"the note carries no signature by the trusted key {key.name}")


@dataclass(frozen=True)
class Checkpoint:
    """A verified checkpoint: ``size`` leaves whose root hash is ``root``."""

    origin: str
    size: int
    root: bytes


def open_checkpoint(note: str, key: Verifier, origin: str | None = None) -> Checkpoint:
    """A checkpoint note signed by ``key`` (C2SP tlog-checkpoint), parsed; raises otherwise."""
    lines = open_note(note, key).split("\n")
    if len(lines) < 4 or not lines[0]:
        raise VerificationError("a checkpoint is origin, tree size and root hash lines")
    if origin is not None and lines[0] != origin:
        raise VerificationError(f"the checkpoint's origin is {lines[0]!r}, not {origin!r}")
    if not lines[1].isdigit() or (lines[1] != "0" and lines[1].startswith("0")):
        raise VerificationError(f"the checkpoint's tree size {lines[1]!r} is not a decimal number")
    root = _b64(lines[2], "the checkpoint's root hash")
    if len(root) != 32:
        raise VerificationError("the checkpoint's root hash is not 32 bytes")
    return Checkpoint(lines[0], int(lines[1]), root)


# -- RFC 9162 proofs -------------------------------------------------------------------------------


def root_from_inclusion(leaf: bytes, index: int, size: int, path: list[bytes]) -> bytes:
    """The root an inclusion path leads to (RFC 9162 §2.1.3.2); raises when it cannot be one."""
    if not 0 <= index < size:
        raise VerificationError(f"leaf index {index} is not inside a tree of {size} leaves")
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            raise VerificationError("the inclusion path is longer than the tree is high")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise VerificationError("the inclusion path is shorter than the tree is high")
    return r


def verify_inclusion(leaf: bytes, index: int, size: int, path: list[bytes], root: bytes) -> None:
    """Raise unless ``path`` proves ``leaf`` is leaf ``index`` of the tree of ``size`` with ``root``."""
    if root_from_inclusion(leaf, index, size, path) != root:
        raise VerificationError("the inclusion path does not lead to the checkpoint's root hash")


def verify_consistency(first: int, second: int, first_root: bytes, second_root: bytes, path: list[bytes]) -> None:
    """Raise unless ``path`` proves the tree of ``first`` leaves is a prefix of the one of
    ``second`` leaves (RFC 9162 §2.1.4.2)."""
    if not 0 < first <= second:
        raise VerificationError(f"sizes {first} and {second}: need 0 < old size <= new size")
    if first == second:
        if path or first_root != second_root:
            raise VerificationError("two checkpoints of one size must have the same root and an empty proof")
        return
    if not path:
        raise VerificationError("the consistency path is empty")
    if first & (first - 1) == 0:
        path = [first_root, *path]
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise VerificationError("the consistency path is longer than the tree is high")
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise VerificationError("the consistency path is shorter than the tree is high")
    if fr != first_root:
        raise VerificationError("the consistency path does not lead to the old checkpoint's root hash")
    if sr != second_root:
        raise VerificationError("the consistency path does not lead to the new checkpoint's root hash")


# -- AgentOS proof documents -------------------------------------------------------------------------


def entry_event_id(entry: bytes) -> str | None:
    """The CloudEvent id in an entry (a structured-mode event, or a binary-mode one with its
    ``ce-*`` headers first); None when the entry is not an event (a rejected or missing message)."""
    try:
        if entry.startswith(_BINARY_MAGIC):
            head = entry[len(_BINARY_MAGIC) :].partition(b"\n")[0]
            found = json.loads(head).get("ce-id")
        else:
            found = json.loads(entry).get("id")
    except (ValueError, AttributeError):
        return None
    return found if isinstance(found, str) else None


def _obj(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise VerificationError(f"{what} is not a JSON object")
    return cast(dict[str, Any], value)


def _path(doc: dict[str, Any]) -> list[bytes]:
    path = doc.get("path")
    if not isinstance(path, list):
        raise VerificationError("the proof's path is not a list of base64 hashes")
    hashes = [_b64(p, "a path hash") if isinstance(p, str) else b"" for p in cast(list[Any], path)]
    if any(len(h) != 32 for h in hashes):
        raise VerificationError("a path hash is not 32 bytes")
    return hashes


def _int(doc: dict[str, Any], name: str) -> int:
    value = doc.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise VerificationError(f"the proof's {name} is not an integer")
    return value


def check_inclusion(doc: dict[str, Any], key: Verifier, origin: str | None = None) -> dict[str, Any]:
    """Verify an inclusion proof document; returns what it proved."""
    cp = open_checkpoint(str(doc.get("checkpoint", "")), key, origin)
    size, index = _int(doc, "tree_size"), _int(doc, "leaf_index")
    if size != cp.size:
        raise VerificationError(f"the proof is for a tree of {size} leaves, the checkpoint signs {cp.size}")
    entry = _b64(str(doc.get("entry", "")), "the entry")
    verify_inclusion(leaf_hash(entry), index, size, _path(doc), cp.root)
    found = entry_event_id(entry)
    claimed = doc.get("event_id")
    if claimed is not None and found != claimed:
        raise VerificationError(f"the entry is event {found!r}, not {claimed!r}")
    root = base64.b64encode(cp.root).decode()
    return {
        "ok": True,
        "kind": "inclusion",
        "event_id": found,
        "leaf_index": index,
        "tree_size": size,
        "root_hash": root,
    }


def check_consistency(doc: dict[str, Any], key: Verifier, origin: str | None = None) -> dict[str, Any]:
    """Verify a consistency proof document; returns what it proved."""
    old, new = _obj(doc.get("old"), "the proof's old checkpoint"), _obj(doc.get("new"), "the proof's new checkpoint")
    a = open_checkpoint(str(old.get("checkpoint", "")), key, origin)
    b = open_checkpoint(str(new.get("checkpoint", "")), key, origin)
    if (_int(old, "tree_size"), _int(new, "tree_size")) != (a.size, b.size):
        raise VerificationError("the proof's tree sizes are not the ones its checkpoints sign")
    if a.origin != b.origin:
        raise VerificationError(f"the checkpoints are of two logs ({a.origin!r}, {b.origin!r})")
    verify_consistency(a.size, b.size, a.root, b.root, _path(doc))
    return {"ok": True, "kind": "consistency", "old_size": a.size, "new_size": b.size, "origin": a.origin}


def check(doc: Any, key: Verifier, origin: str | None = None) -> dict[str, Any]:
    """Verify a proof document made by ``agentos audit prove``; raises :class:`VerificationError`."""
    proof = _obj(doc, "the proof")
    if proof.get("format") != PROOF_FORMAT:
        raise VerificationError(f"not a proof document of format {PROOF_FORMAT}")
    if proof.get("kind") == "inclusion":
        return check_inclusion(proof, key, origin)
    if proof.get("kind") == "consistency":
        return check_consistency(proof, key, origin)
    raise VerificationError(f"unknown proof kind {proof.get('kind')!r}")


__all__ = [
    "PROOF_FORMAT",
    "Checkpoint",
    "VerificationError",
    "Verifier",
    "check",
    "check_consistency",
    "check_inclusion",
    "entry_event_id",
    "key_id",
    "leaf_hash",
    "node_hash",
    "open_checkpoint",
    "open_note",
    "root_from_inclusion",
    "verify_consistency",
    "verify_inclusion",
]
