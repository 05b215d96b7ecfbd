"""A mailbox's secrets and sign-in tokens: kept encrypted, loaded, refreshed.

Below the providers (they read passwords and tokens here) and above nothing but
the models and the audit log: it never calls the services, sync or sending.

Secrets at rest are AES-256-GCM bound to their account and mailbox. The
associated data is ``account_id;mailbox_id``, so a ciphertext copied onto
another row (or into another account) fails to decrypt instead of handing one
mailbox's password to another. Keys come from ``FIELD_ENCRYPTION_KEYS``: the
first encrypts, every one decrypts, and ``manage.py rotate_encryption_keys``
re-encrypts everything under the first.

Layout: version byte (1) | key id (4 bytes of SHA-256 of the key) | nonce (12) | ciphertext+tag.

OAuth mailboxes (Gmail, Microsoft 365, and IMAP/SMTP with XOAUTH2) keep their
tokens in the same encrypted secrets. ``access_token_for`` refreshes before
expiry, one refresh per mailbox at a time (the ``token_refresh_until`` lease),
and commits a rotated refresh token the moment it is issued: a worker killed
right after a refresh must not leave the old (now dead) token behind. The
refresh itself is the provider's (``OAuthClient.refresh``), passed in by the
caller.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from audit.services import audit_record
from inboxes import events
from inboxes.models import Mailbox, MailboxStatus, Provider, SyncState
from inboxes.providers.base import ProviderError

VERSION = b"\x01"

# Refresh this long before the access token expires.
REFRESH_MARGIN_SECONDS = 120
REFRESH_LOCK_SECONDS = 60


# --- The cipher ---------------------------------------------------------------------------------


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


def _associated_data(account_id: Any, mailbox_id: Any) -> bytes:
    return f"{account_id};{mailbox_id}".encode()


def encrypt_secrets(secrets: dict[str, str], *, account_id: Any, mailbox_id: Any) -> bytes:
    key = _load_keys()[0]
    nonce = os.urandom(12)
    plaintext = json.dumps(secrets, separators=(",", ":")).encode()
    sealed = key.aead.encrypt(nonce, plaintext, _associated_data(account_id, mailbox_id))
    return VERSION + key.key_id + nonce + sealed


def decrypt_secrets(
    blob: bytes | memoryview, *, account_id: Any, mailbox_id: Any
) -> dict[str, str]:
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


def is_current(blob: bytes | memoryview) -> bool:
    """True when the blob is already under the first (encrypting) key."""
    return bytes(blob)[1:5] == _load_keys()[0].key_id


# --- A mailbox's secrets -------------------------------------------------------------------------


def mailbox_secrets(mailbox: Mailbox) -> dict[str, str]:
    """The decrypted secrets of ``mailbox`` (passwords or tokens); {} when it has none."""
    if not mailbox.secrets_ciphertext:
        return {}
    return decrypt_secrets(
        mailbox.secrets_ciphertext, account_id=mailbox.account_id, mailbox_id=mailbox.pk
    )


# --- OAuth tokens ---------------------------------------------------------------------------------


@dataclass
class OAuthTokens:
    access_token: str
    refresh_token: str
    expires_at: float  # epoch seconds
    scope: str = ""

    def fresh(self, margin: float = REFRESH_MARGIN_SECONDS) -> bool:
        return bool(self.access_token) and self.expires_at - margin > time.time()


@dataclass
class OAuthGrant:
    """What a finished consent flow yields."""

    tokens: OAuthTokens
    address: str  # from the provider's profile (Gmail users.getProfile, Graph /me)
    provider_user_id: str = ""


class TokenRefresher(Protocol):
    def refresh(self, tokens: OAuthTokens) -> OAuthTokens:
        """New tokens; raises ProviderError(reauth=True) when the grant is dead."""
        ...


class OAuthClient(TokenRefresher, Protocol):
    """What a sign-in provider implements (inboxes/providers/gmail/signin.py,
    graph/signin.py): start the consent flow, finish it (the address comes from
    the provider's profile, never from what the user typed), and refresh tokens."""

    @property
    def provider(self) -> str: ...

    @property
    def label(self) -> str: ...

    def missing_settings(self) -> list[str]: ...

    def begin(
        self, *, redirect_uri: str, login_hint: str = "", extra_scopes: Sequence[str] = ()
    ) -> tuple[str, dict]:
        """The consent page URL and the flow data to keep (must include "state").
        ``extra_scopes``: asked for on top of the mail scopes (an incremental consent,
        e.g. the meetings tool's calendar); the grant then covers both."""
        ...

    def complete(self, *, flow: dict, params: dict[str, str], redirect_uri: str) -> OAuthGrant:
        """Finish the flow from the callback's query parameters (state already checked)."""
        ...


REQUIRED_SETTINGS: dict[str, list[str]] = {
    Provider.GMAIL: ["GOOGLE_CLIENT_ID", "GOOGLE_CLIENT_SECRET"],
    Provider.MICROSOFT: ["MICROSOFT_CLIENT_ID", "MICROSOFT_CLIENT_SECRET"],
}


def missing_settings(provider: str) -> list[str]:
    """The environment variables an operator still has to set for this provider."""
    return [name for name in REQUIRED_SETTINGS.get(provider, []) if not getattr(settings, name, "")]


def tokens_load(mailbox: Mailbox) -> OAuthTokens:
    secrets = mailbox_secrets(mailbox)
    if "refresh_token" not in secrets:
        raise ProviderError("This mailbox has no sign-in tokens; reconnect it.", reauth=True)
    return OAuthTokens(
        access_token=secrets.get("access_token", ""),
        refresh_token=secrets["refresh_token"],
        expires_at=float(secrets.get("expires_at", 0)),
        scope=secrets.get("scope", ""),
    )


def tokens_encrypted(mailbox: Mailbox, tokens: OAuthTokens) -> bytes:
    """``tokens`` sealed for ``mailbox``'s row (to store in ``secrets_ciphertext``)."""
    return encrypt_secrets(
        {k: str(v) for k, v in asdict(tokens).items()},
        account_id=mailbox.account_id,
        mailbox_id=mailbox.pk,
    )


def tokens_store(mailbox: Mailbox, tokens: OAuthTokens) -> None:
    """Commit new tokens now (autocommit, or the caller's short transaction)."""
    Mailbox.objects.filter(pk=mailbox.pk).update(
        secrets_ciphertext=tokens_encrypted(mailbox, tokens)
    )
    mailbox.secrets_ciphertext = tokens_encrypted(mailbox, tokens)


def mark_needs_reauth(mailbox: Mailbox, reason: str) -> None:
    Mailbox.objects.filter(pk=mailbox.pk).exclude(status=MailboxStatus.DISCONNECTED).update(
        status=MailboxStatus.NEEDS_REAUTH,
        last_error=reason[:2000],
        sync_state=SyncState.STOPPED,
        sync_last_error=reason[:2000],
    )
    audit_record(
        account=mailbox.account,
        actor=None,
        action="mailbox.needs_reauth",
        target=mailbox,
        data={"reason": reason[:500]},
    )
    events.report_mailbox_health(mailbox.pk)


def access_token_for(mailbox: Mailbox, client: TokenRefresher) -> str:
    """A valid access token, refreshed with ``client`` if it is about to expire.

    One refresh per mailbox at a time: the refresher takes a short lease on the
    mailbox row (a conditional UPDATE, like the sync lease); others wait and
    re-read the stored tokens. The refresh itself (network) runs outside any
    transaction, and its result is committed at once.
    """
    deadline = time.monotonic() + REFRESH_LOCK_SECONDS
    while True:
        mailbox.refresh_from_db(fields=["secrets_ciphertext", "token_refresh_until", "status"])
        if mailbox.status == MailboxStatus.NEEDS_REAUTH:
            raise ProviderError(mailbox.last_error or "Sign in again to reconnect.", reauth=True)
        tokens = tokens_load(mailbox)
        if tokens.fresh():
            return tokens.access_token
        now = timezone.now()
        won = (
            Mailbox.objects.filter(pk=mailbox.pk)
            .filter(Q(token_refresh_until__isnull=True) | Q(token_refresh_until__lt=now))
            .update(token_refresh_until=now + timedelta(seconds=REFRESH_LOCK_SECONDS))
        )
        if won:
            break
        if time.monotonic() > deadline:
            raise ProviderError("Timed out waiting for another worker's token refresh.")
        time.sleep(0.2)
    try:
        tokens = tokens_load(Mailbox.objects.get(pk=mailbox.pk))  # re-read under the lease
        if tokens.fresh():
            return tokens.access_token
        try:
            new = client.refresh(tokens)
        except ProviderError as exc:
            if exc.reauth:
                mark_needs_reauth(mailbox, str(exc))
            raise
        if not new.refresh_token:
            new.refresh_token = tokens.refresh_token  # Google does not always rotate
        tokens_store(mailbox, new)
        return new.access_token
    finally:
        Mailbox.objects.filter(pk=mailbox.pk).update(token_refresh_until=None)
