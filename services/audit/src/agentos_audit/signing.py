"""Signed checkpoints of the audit log's Merkle tree, and the key that signs them.

A checkpoint is a C2SP ``tlog-checkpoint`` (``<origin>\n<tree size>\n<base64 root hash>\n``) in a
C2SP signed note: the text, a blank line, and ``— <key name> <base64(key id || Ed25519
signature)>``, the key name being the origin and the key id ``SHA-256(name || 0x0A || 0x01 ||
public key)[:4]``. An auditor trusts the *verifier key* (``vkey``: ``<name>+<hex key id>+
<base64(0x01 || public key)>``, exported as ``<key file>.vkey``) and checks notes with
``python -m agentos_verify``. (Before the tree, checkpoints were JSON statements "the chain of
stream X at sequence N has hash H"; :func:`check` still reads those.)

The private key is generated on first start and kept in a PEM file (``AGENTOS_AUDIT_KEY_FILE``,
default ``<state dir>/audit/audit-ed25519.pem``, mode 0600); its public key is exported next to it
as ``<key file>.pub``. ``verify`` trusts that public file (or one given to it), never a key read
from the database, so whoever can write to Postgres cannot forge a checkpoint.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import os
from pathlib import Path
from typing import Any, NamedTuple

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

_encoder = msgspec.json.Encoder(order="sorted")


class Checkpoint(NamedTuple):
    """One signed statement, as stored in ``audit.checkpoints``."""

    seq: int
    hash: bytes
    key_id: str
    message: bytes
    signature: bytes


def key_id(public: Ed25519PublicKey) -> str:
    """A short fingerprint of a public key: sha256 of its raw bytes, first 16 hex digits."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def note_key_id(name: str, public: Ed25519PublicKey) -> bytes:
    """The C2SP signed-note key id of an Ed25519 key named ``name``."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(name.encode() + b"\n\x01" + raw).digest()[:4]


def vkey(name: str, public: Ed25519PublicKey) -> str:
    """The verifier key an auditor trusts: ``<name>+<hex key id>+<base64(0x01 || public key)>``."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    key = base64.b64encode(b"\x01" + raw).decode()
    return f"{name}+{note_key_id(name, public).hex()}+{key}"


def checkpoint_text(origin: str, size: int, root: bytes) -> str:
    """The body of a tlog-checkpoint."""
    return f"{origin}\n{size}\n{base64.b64encode(root).decode()}\n"


class Note(NamedTuple):
    """A checkpoint note whose signature by the trusted key is valid."""

    origin: str
    size: int
    root: bytes


def open_note(public: Ed25519PublicKey, note: str) -> Note | None:
    """The checkpoint in ``note`` if it carries a valid signature of ``public`` (under the name
    its origin gives the key), else None."""
    text, sep, block = note.rpartition("\n\n")
    lines = text.split("\n")
    if not sep or len(lines) < 3 or not lines[1].isdigit():
        return None
    origin, size = lines[0], int(lines[1])
    try:
        root = base64.b64decode(lines[2], validate=True)
        for line in block.rstrip("\n").split("\n"):
            dash, name, sig = line.split(" ")
            raw = base64.b64decode(sig, validate=True)
            if dash == "\u2014" and name == origin and raw[:4] == note_key_id(origin, public):
                public.verify(raw[4:], (text + "\n").encode())
                return Note(origin, size, root) if len(root) == 32 else None
    except (ValueError, InvalidSignature):
        return None
    return None


def public_pem(public: Ed25519PublicKey) -> bytes:
    """A public key as PEM (SubjectPublicKeyInfo)."""
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def public_path(key_file: Path) -> Path:
    """Where the public key of ``key_file`` is exported."""
    return key_file.with_name(key_file.name + ".pub")


class Signer:
    """Signs checkpoints with one private key."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self.private = private
        self.public = private.public_key()
        self.key_id = key_id(self.public)

    def note(self, origin: str, size: int, root: bytes) -> str:
        """A signed checkpoint note of the tree of ``size`` leaves with ``root``, named ``origin``."""
        text = checkpoint_text(origin, size, root)
        signature = note_key_id(origin, self.public) + self.private.sign(text.encode())
        return f"{text}\n\u2014 {origin} {base64.b64encode(signature).decode()}\n"

    def sign(self, stream: str, stream_created: str, seq: int, chain_hash: bytes) -> Checkpoint:
        """A checkpoint of the chain at ``seq``."""
        message = _encoder.encode(
            {
                "v": 1,
                "stream": stream,
                "stream_created": stream_created,
                "seq": seq,
                "hash": chain_hash.hex(),
                "key_id": self.key_id,
                "signed_at": dt.datetime.now(dt.UTC).isoformat(),
            }
        )
        return Checkpoint(seq, chain_hash, self.key_id, message, self.private.sign(message))


def vkey_path(key_file: Path) -> Path:
    """Where the verifier key of ``key_file`` is exported."""
    return key_file.with_name(key_file.name + ".vkey")


def write_vkey(key_file: Path, name: str, public: Ed25519PublicKey) -> str:
    """Export the verifier key of ``public`` named ``name`` next to ``key_file``; returns it."""
    text = vkey(name, public)
    path = vkey_path(key_file)
    if not path.exists() or path.read_text().strip() != text:
        path.write_text(text + "\n")
    return text


def load_or_create(key_file: Path) -> Signer:
    """The signer whose key is in ``key_file``; a new key is created (atomically) if there is none."""
    if not key_file.exists():
        key_file.parent.mkdir(parents=True, exist_ok=True)
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        tmp = key_file.with_name(f".{key_file.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        try:
            os.link(tmp, key_file)  # fails if another replica won the race: then use its key
        except FileExistsError:
            pass
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
    private = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    if not isinstance(private, Ed25519PrivateKey):
        raise ValueError(f"{key_file} does not hold an Ed25519 private key")
    signer = Signer(private)
    pub = public_path(key_file)
    if not pub.exists() or pub.read_bytes() != public_pem(signer.public):
        pub.write_bytes(public_pem(signer.public))
    return signer


def load_private(key_file: Path) -> Signer:
    """The signer of an existing key file (an error naming the file when there is none)."""
    from agentos_kernel.exceptions import ConfigError

    if not key_file.exists():
        raise ConfigError(f"no audit signing key at {key_file} (AGENTOS_AUDIT_KEY_FILE): the audit service makes it")
    private = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    if not isinstance(private, Ed25519PrivateKey):
        raise ConfigError(f"{key_file} does not hold an Ed25519 private key")
    return Signer(private)


def load_public(path: Path) -> Ed25519PublicKey:
    """A trusted public key from a PEM file (the exported ``.pub``, or the private key file itself)."""
    data = path.read_bytes()
    if b"PRIVATE KEY" in data:
        private = serialization.load_pem_private_key(data, password=None)
        if not isinstance(private, Ed25519PrivateKey):
            raise ValueError(f"{path} does not hold an Ed25519 key")
        return private.public_key()
    public = serialization.load_pem_public_key(data)
    if not isinstance(public, Ed25519PublicKey):
        raise ValueError(f"{path} does not hold an Ed25519 public key")
    return public


def check(public: Ed25519PublicKey, message: bytes, signature: bytes) -> dict[str, Any] | None:
    """The signed statement if ``signature`` is valid for ``message`` under ``public``, else None."""
    try:
        public.verify(signature, message)
    except InvalidSignature:
        return None
    statement: dict[str, Any] = msgspec.json.decode(message)
    return statement


__all__ = [
    "Checkpoint",
    "Ed25519PrivateKey",
    "Note",
    "Signer",
    "check",
    "checkpoint_text",
    "key_id",
    "load_or_create",
    "load_private",
    "load_public",
    "note_key_id",
    "open_note",
    "public_path",
    "vkey",
    "vkey_path",
    "write_vkey",
]
