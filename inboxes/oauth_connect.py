"""Connecting OAuth mailboxes (Gmail, Microsoft 365): the service behind the consent flow.

``inboxes/oauth_views.py`` runs the consent round trip with the provider's
``OAuthClient`` (``inboxes.providers.signin.oauth_client``) and hands the grant
here. ``oauth_mailbox_connect`` runs the rules (R1-R4, R8) before anything is
saved, and reconnects keep the mailbox and all its history. The tokens are
stored encrypted by ``inboxes.credentials``, which also refreshes them later.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction
from django.http import HttpResponse

from accounts.models import User
from audit.services import audit_record
from core.errors import Invalid
from inboxes import events
from inboxes.addresses import canonical_address
from inboxes.credentials import OAuthGrant, missing_settings, tokens_encrypted
from inboxes.history import DEFAULT_BACKFILL_DAYS
from inboxes.models import Inbox, Mailbox, MailboxKind, MailboxStatus, Provider, SyncState
from inboxes.outbox import outbox_resume
from inboxes.services import mailbox_create
from inboxes.sync import schedule_sync


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


def allow_sign_in_forms(response: HttpResponse) -> HttpResponse:
    """Let the page's connect forms lead to the sign-in pages of the providers set up.

    A connect form goes to /connect/<provider>/, which redirects to the provider's
    consent page, and browsers hold a form's redirects to the page's CSP
    ``form-action`` too (``'self'`` alone blocks the sign-in)."""
    origins = []
    for url, provider in (
        (settings.GOOGLE_AUTH_URI, Provider.GMAIL),
        (settings.MICROSOFT_AUTHORITY, Provider.MICROSOFT),
    ):
        parts = urlsplit(url or "")
        if parts.scheme in ("https", "http") and parts.netloc and not missing_settings(provider):
            origins.append(f"{parts.scheme}://{parts.netloc}")
    if origins:
        response._csp_update = {"form-action": origins}  # type: ignore[attr-defined]
    return response


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
    backfill_days: int | None = DEFAULT_BACKFILL_DAYS,
) -> Mailbox:
    """Save a mailbox from a finished consent flow, after the rules allow it.
    ``backfill_days``: how much history to import (inboxes/history.py); a
    reconnect keeps the mailbox's own."""
    address = grant.address.strip()
    canonical = canonical_address(address)
    if reconnect is not None:
        return _reconnect(actor=actor, mailbox=reconnect, canonical=canonical, grant=grant, ip=ip)
    if kind not in MailboxKind.values:
        raise Invalid("Unknown kind.", errors={"kind": ['Use "personal" or "team".']})

    def fill(mailbox: Mailbox) -> None:
        mailbox.provider_user_id = grant.provider_user_id[:255]
        mailbox.secrets_ciphertext = tokens_encrypted(mailbox, grant.tokens)
        _keep_push_channel_soon(mailbox)

    mailbox = mailbox_create(
        actor=actor,
        address=address,
        canonical=canonical,
        kind=kind,
        provider=provider,
        inbox=inbox,
        acknowledge_team_visibility=acknowledge_team_visibility,
        ip=ip,
        backfill_days=backfill_days,
        fill=fill,
    )
    return mailbox


def _keep_push_channel_soon(mailbox: Mailbox) -> None:
    """Push (a Gmail watch, Graph subscriptions) starts within seconds of connecting,
    once the row is committed (inside ``mailbox_create``'s transaction: a refused
    connect rolls back and queues nothing)."""
    from inboxes.push.state import push_configured
    from inboxes.tasks import keep_push_channel

    if push_configured(mailbox.provider):
        mailbox_id = str(mailbox.pk)
        transaction.on_commit(lambda: keep_push_channel.delay(mailbox_id))


def _reconnect(
    *, actor: User, mailbox: Mailbox, canonical: str, grant: OAuthGrant, ip: str | None
) -> Mailbox:
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
            secrets_ciphertext=tokens_encrypted(mailbox, grant.tokens),
            status=MailboxStatus.CONNECTED,
            last_error="",
            sync_state=SyncState.PENDING,
            sync_last_error="",
        )
        schedule_sync(mailbox.pk)
        _keep_push_channel_soon(mailbox)
        outbox_resume(mailbox.pk)
        audit_record(
            account=mailbox.account,
            actor=actor,
            action="mailbox.reconnected",
            target=mailbox,
            ip=ip,
        )
        transaction.on_commit(lambda: events.report_mailbox_health(mailbox.pk))
    mailbox.refresh_from_db()
    return mailbox
