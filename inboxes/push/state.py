"""A mailbox's push: holding, lapsed, and what one push does."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from django.conf import settings
from django.utils import timezone

from inboxes.models import Mailbox, Provider
from inboxes.sync.schedule import schedule_sync


def push_holds(mailbox_id: UUID | str, until: datetime) -> None:
    """Something promises to tell us of new mail until ``until``: poll less."""
    Mailbox.objects.filter(pk=mailbox_id).update(pushed_until=until, push_error="")


def push_lapsed(mailbox_id: UUID | str, why: str = "") -> None:
    """Push stopped (or could not start): the poll covers the mailbox again, and the
    mailbox page says why."""
    Mailbox.objects.filter(pk=mailbox_id).update(pushed_until=None, push_error=why)


def push_received(mailbox_id: UUID | str) -> None:
    """A push arrived for the mailbox: look. The sync decides what is new from its
    cursor, so this is safe to call for duplicate, late or forged pushes."""
    schedule_sync(mailbox_id)


GMAIL_NOT_SET_UP = "Gmail push is not set up on this server; GMAIL_PUBSUB_TOPIC is unset"
GRAPH_NOT_SET_UP = (
    "Microsoft Graph notifications are off on this server: GRAPH_PUSH is off "
    "(it needs an https PUBLIC_URL that Microsoft can reach)"
)


_NOT_SET_UP: dict[str, str] = {
    Provider.GMAIL: GMAIL_NOT_SET_UP,
    Provider.MICROSOFT: GRAPH_NOT_SET_UP,
}


def push_configured(provider: str) -> bool:
    """Whether this server has push set up for the provider's mailboxes."""
    if provider == Provider.GMAIL:
        return bool(settings.GMAIL_PUBSUB_TOPIC)
    if provider == Provider.MICROSOFT:
        return bool(settings.GRAPH_PUSH)
    return False  # IMAP: IDLE is the watchers' job


@dataclass(frozen=True)
class PushView:
    """How the mailbox page shows the way new mail is noticed."""

    on: bool
    text: str


_PUSH_NAMES = {
    Provider.IMAP: "IMAP IDLE",
    Provider.GMAIL: "Gmail push",
    Provider.MICROSOFT: "Microsoft Graph notifications",
}


def mailbox_push_view(mailbox: Mailbox, now: datetime | None = None) -> PushView:
    now = now or timezone.now()
    if mailbox.pushed_until and mailbox.pushed_until > now:
        return PushView(True, f"New mail arrives by {_PUSH_NAMES[Provider(mailbox.provider)]}")
    poll = f"New mail is checked every {settings.SYNC_POLL_SECONDS} s"
    if mailbox.provider in _NOT_SET_UP and not push_configured(mailbox.provider):
        return PushView(False, f"{poll}: push is off ({_NOT_SET_UP[mailbox.provider]})")
    if mailbox.push_error:
        return PushView(False, f"{poll}: push is off ({mailbox.push_error})")
    return PushView(False, poll)
