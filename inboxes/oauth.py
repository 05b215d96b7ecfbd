"""OAuth mailboxes (Gmail, Microsoft 365): the part every provider shares.

- ``OAuthClient``: what a provider module implements (gmail.py, graph.py):
  start the consent flow, finish it (the address comes from the provider's
  profile, never from what the user typed), and refresh tokens.
- Tokens live in the mailbox's encrypted secrets (inboxes/crypto.py).
- ``access_token_for`` refreshes before expiry, one refresh per mailbox at a
  time, and commits a rotated refresh token the moment it is issued: a worker
  killed right after a refresh must not leave the old (now dead) token behind.
- ``oauth_mailbox_connect`` runs the rules (R1-R4, R8) before anything is saved,
  and reconnects keep the mailbox and all its history.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Protocol

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from accounts.models import User
from audit.services import audit_record
from core.errors import Invalid
from inboxes.addresses import canonical_address
from inboxes.crypto import decrypt_secrets, encrypt_secrets
from inboxes.models import Inbox, Mailbox, MailboxKind, MailboxStatus, Provider, SyncState
from inboxes.outbox import outbox_resume
from inboxes.providers.base import ProviderError
from inboxes.services import mailbox_create
from inboxes.sync import schedule_sync

# Refresh this long before the access token expires.
REFRESH_MARGIN_SECONDS = 120
REFRESH_LOCK_SECONDS = 60


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


class OAuthClient(Protocol):
    provider: str
    label: str

    def missing_settings(self) -> list[str]: ...

    def begin(self, *, redirect_uri: str, login_hint: str = "") -> tuple[str, dict]:
        """The consent page URL and the flow data to keep (must include "state")."""
        ...

    def complete(self, *, flow: dict, params: dict[str, str], redirect_uri: str) -> OAuthGrant:
        """Finish the flow from the callback's query parameters (state already checked)."""
        ...

    def refresh(self, tokens: OAuthTokens) -> OAuthTokens:
        """New tokens; raises ProviderError(reauth=True) when the grant is dead."""
        ...


REQUIRED_SETTINGS = {
    Provider.GMAIL: ["GOOGLE_CLIENT_ID", "GOOGLE_CLIENT_SECRET"],
    Provider.MICROSOFT: ["MICROSOFT_CLIENT_ID", "MICROSOFT_CLIENT_SECRET"],
}


def missing_settings(provider: str) -> list[str]:
    """The environment variables an operator still has to set for this provider."""
    from django.conf import settings

    return [name for name in REQUIRED_SETTINGS.get(provider, []) if not getattr(settings, name, "")]


def connect_options() -> list[dict]:
    """For the settings pages: each sign-in provider and what it still lacks."""
    return [
        {"slug": "gmail", "label": "Gmail", "missing": missing_settings(Provider.GMAIL)},
        {
            "slug": "microsoft",
            "label": "Microsoft 365",
            "missing": missing_settings(Provider.MICROSOFT),
        },
    ]


def oauth_client(provider: str) -> OAuthClient:
    if provider == Provider.GMAIL:
        from inboxes.providers.gmail import GoogleOAuthClient

        return GoogleOAuthClient()
    if provider == Provider.MICROSOFT:
        from inboxes.providers.graph import MicrosoftOAuthClient

        return MicrosoftOAuthClient()
    raise Invalid(f"Unknown sign-in provider {provider!r}.")


# --- Token storage ---------------------------------------------------------------------------


def tokens_load(mailbox: Mailbox) -> OAuthTokens:
    secrets = (
        decrypt_secrets(
            mailbox.secrets_ciphertext or b"", account_id=mailbox.account_id, mailbox_id=mailbox.pk
        )
        if mailbox.secrets_ciphertext
        else {}
    )
    if "refresh_token" not in secrets:
        raise ProviderError("This mailbox has no sign-in tokens; reconnect it.", reauth=True)
    return OAuthTokens(
        access_token=secrets.get("access_token", ""),
        refresh_token=secrets["refresh_token"],
        expires_at=float(secrets.get("expires_at", 0)),
        scope=secrets.get("scope", ""),
    )


def _encrypted(mailbox: Mailbox, tokens: OAuthTokens) -> bytes:
    return encrypt_secrets(
        {k: str(v) for k, v in asdict(tokens).items()},
        account_id=mailbox.account_id,
        mailbox_id=mailbox.pk,
    )


def tokens_store(mailbox: Mailbox, tokens: OAuthTokens) -> None:
    """Commit new tokens now (autocommit, or the caller's short transaction)."""
    Mailbox.objects.filter(pk=mailbox.pk).update(secrets_ciphertext=_encrypted(mailbox, tokens))
    mailbox.secrets_ciphertext = _encrypted(mailbox, tokens)


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


def access_token_for(mailbox: Mailbox, client: OAuthClient | None = None) -> str:
    """A valid access token, refreshed if it is about to expire.

    One refresh per mailbox at a time: the refresher takes a short lease on the
    mailbox row (a conditional UPDATE, like the sync lease); others wait and
    re-read the stored tokens. The refresh itself (network) runs outside any
    transaction, and its result is committed at once.
    """
    client = client or oauth_client(mailbox.oauth_provider or mailbox.provider)
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


# --- Connecting --------------------------------------------------------------------------------


def oauth_mailbox_connect(
    *,
    actor: User,
    provider: str,
    grant: OAuthGrant,
    kind: str,
    inbox: Inbox | None = None,
    acknowledge_team_visibility: bool = False,
    reconnect: Mailbox | None = None,
    ip: str | None = None,
) -> Mailbox:
    """Save a mailbox from a finished consent flow, after the rules allow it."""
    address = grant.address.strip()
    canonical = canonical_address(address)
    if reconnect is not None:
        return _reconnect(actor=actor, mailbox=reconnect, canonical=canonical, grant=grant, ip=ip)
    if kind not in MailboxKind.values:
        raise Invalid("Unknown kind.", errors={"kind": ['Use "personal" or "team".']})

    def fill(mailbox: Mailbox) -> None:
        mailbox.provider_user_id = grant.provider_user_id[:255]
        mailbox.secrets_ciphertext = _encrypted(mailbox, grant.tokens)

    return mailbox_create(
        actor=actor,
        address=address,
        canonical=canonical,
        kind=kind,
        provider=provider,
        inbox=inbox,
        acknowledge_team_visibility=acknowledge_team_visibility,
        ip=ip,
        fill=fill,
    )


def _reconnect(*, actor: User, mailbox: Mailbox, canonical: str, grant: OAuthGrant, ip) -> Mailbox:
    """Same address: new tokens, history kept. A different address is refused."""
    if mailbox.canonical_address != canonical:
        raise Invalid(
            f"You signed in as {grant.address}, but this mailbox is {mailbox.address}. "
            "Sign in with that account, or connect the other address separately."
        )
    if mailbox.kind == MailboxKind.PERSONAL and mailbox.owner_id != actor.pk:
        raise Invalid("Only the owner can reconnect a personal email.")
    if mailbox.kind == MailboxKind.TEAM and not actor.is_admin:
        raise Invalid("Only an account admin can reconnect a team email.")
    with transaction.atomic():
        Mailbox.objects.filter(pk=mailbox.pk).update(
            secrets_ciphertext=_encrypted(mailbox, grant.tokens),
            status=MailboxStatus.CONNECTED,
            last_error="",
            sync_state=SyncState.PENDING,
            sync_last_error="",
        )
        schedule_sync(mailbox.pk)
        outbox_resume(mailbox.pk)
        audit_record(
            account=mailbox.account,
            actor=actor,
            action="mailbox.reconnected",
            target=mailbox,
            ip=ip,
        )
    mailbox.refresh_from_db()
    return mailbox
