"""Sealing one personal field: the cipher under :mod:`agentos_kernel.shred`.

AES-256-GCM with a fresh random 96-bit nonce per field, and the key name and revision, event type
and field name as associated data, so a token opens only in the field and event type it was
sealed for, and only under the key revision it names.
"""

from __future__ import annotations

import base64
import logging
import os
import threading

from agentos_schemas.personal import ERASED, is_token, parse_token, token
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

log = logging.getLogger("agentos.shred")  # part of crypto-shredding: it logs as shred

_NONCE = 12


def _aad(name: str, revision: int, type_: str, field: str) -> bytes:
    return f"{name}.{revision}|{type_}|{field}".encode()


class _Nonces:
    """Random 96-bit AES-GCM nonces drawn from the OS in blocks (one ``getrandom`` per 340
    nonces, not one each); the block is dropped in a forked child, so no two processes ever
    hand out the same bytes."""

    BLOCK = 340 * _NONCE

    def __init__(self) -> None:
        self._block = b""
        self._at = 0
        self._lock = threading.Lock()  # two threads never get the same slice
        os.register_at_fork(after_in_child=self._drop)

    def _drop(self) -> None:
        self._block, self._at = b"", 0
        self._lock = threading.Lock()

    def take(self) -> bytes:
        with self._lock:
            if self._at >= len(self._block):
                self._block, self._at = os.urandom(self.BLOCK), 0
            at = self._at
            self._at = at + _NONCE
            return self._block[at : at + _NONCE]


_nonces = _Nonces()


def seal_value(value: str, name: str, revision: int, aead: AESGCM, type_: str, field: str) -> str:
    """``value`` as a token sealed for ``field`` of ``type_`` under revision ``revision`` of key ``name``."""
    nonce = _nonces.take()
    sealed = aead.encrypt(nonce, value.encode(), _aad(name, revision, type_, field))
    return token(name, revision, base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode())


def open_value(value: str, key: tuple[int, AESGCM] | None, type_: str, field: str) -> str:
    """The plaintext of a token, or ``[ERASED]`` if the key is gone, is another revision, or the
    token does not open under it. A value that is not a token is returned as it is."""
    parsed = parse_token(value) if is_token(value) else None
    if parsed is None:
        return ERASED if is_token(value) else value
    name, revision, blob = parsed
    if key is None or key[0] != revision:
        return ERASED
    try:
        raw = base64.urlsafe_b64decode(blob + "=" * (-len(blob) % 4))
        return key[1].decrypt(raw[:_NONCE], raw[_NONCE:], _aad(name, revision, type_, field)).decode()
    except (InvalidTag, ValueError, UnicodeDecodeError):
        log.warning("a %s.%s token sealed with key %s.%d does not open: read as erased", type_, field, name, revision)
        return ERASED
