"""Mailbox secrets at rest: AES-256-GCM bound to their account and mailbox.

The associated data is ``account_id;mailbox_id``, so a ciphertext copied onto
another row (or into another account) fails to decrypt instead of handing one
mailbox's password to another. Keys come from ``FIELD_ENCRYPTION_KEYS``: the
first encrypts, every one decrypts, and ``manage.py rotate_encryption_keys``
re-encrypts everything under the first.

Layout: version byte (1) | key id (4 bytes of SHA-256 of the key) | nonce (12) | ciphertext+tag.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings

VERSION = b"\x01"


class SecretDecryptionError(Exception):
    """The secret can't be read: wrong row, unknown key or tampered bytes."""


@dataclass(frozen=True)
class _Key:
    key_id: bytes
    aead: AESGCM


def _load_keys() -> list[_Key]:
    keys = []
    for text in settings.FIELD_ENCRYPTION_KEYS:
        try:
            raw = base64.urlsafe_b64decode(text.encode())
        except (binascii.Error, ValueError) as exc:
            raise SecretDecryptionError(
                "FIELD_ENCRYPTION_KEYS holds a key that is not base64"
            ) from exc
        if len(raw) != 32:
            raise SecretDecryptionError("every FIELD_ENCRYPTION_KEYS key must be 32 bytes (base64)")
        keys.append(_Key(key_id=hashlib.sha256(raw).digest()[:4], aead=AESGCM(raw)))
    if not keys:
        raise SecretDecryptionError("FIELD_ENCRYPTION_KEYS is empty")
    return keys


def _associated_data(account_id, mailbox_id) -> bytes:
    return f"{account_id};{mailbox_id}".encode()


def encrypt_secrets(secrets: dict[str, str], *, account_id, mailbox_id) -> bytes:
    key = _load_keys()[0]
    nonce = os.urandom(12)
    plaintext = json.dumps(secrets, separators=(",", ":")).encode()
    sealed = key.aead.encrypt(nonce, plaintext, _associated_data(account_id, mailbox_id))
    return VERSION + key.key_id + nonce + sealed


def decrypt_secrets(blob: bytes, *, account_id, mailbox_id) -> dict[str, str]:
    blob = bytes(blob)
    if len(blob) < 1 + 4 + 12 + 16 or blob[:1] != VERSION:
        raise SecretDecryptionError("not a Postkamer secret")
    key_id, nonce, sealed = blob[1:5], blob[5:17], blob[17:]
    for key in _load_keys():
        if key.key_id != key_id:
            continue
        try:
            plaintext = key.aead.decrypt(nonce, sealed, _associated_data(account_id, mailbox_id))
        except InvalidTag as exc:
            raise SecretDecryptionError("the secret does not belong to this mailbox") from exc
        return json.loads(plaintext)
    raise SecretDecryptionError("the secret was encrypted with a key that is no longer configured")


def is_current(blob: bytes) -> bool:
    """True when the blob is already under the first (encrypting) key."""
    return bytes(blob)[1:5] == _load_keys()[0].key_id
