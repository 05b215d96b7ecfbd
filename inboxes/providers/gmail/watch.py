"""Gmail push: ``users.watch`` and ``users.stop`` for one mailbox.

A watch asks Gmail to publish to the operator's Pub/Sub topic whenever INBOX or
SENT changes; Pub/Sub then POSTs to ``/hooks/gmail/`` (inboxes/push/gmail_hook.py).
A watch lapses after 7 days unless it is made again (a second ``users.watch``
replaces the first), and ``users.stop`` ends it. Both go through the mailbox's
``GmailApi`` (token renewal, backoff), and their failures are ``ProviderError``
like every other Gmail call.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from inboxes.models import Mailbox
from inboxes.providers.base import ProviderError
from inboxes.providers.gmail.http import gmail_errors
from inboxes.providers.gmail.mailbox import GmailMailbox
from inboxes.providers.gmail.session import INBOX, SENT

WATCHED_LABELS = (INBOX, SENT)


@dataclass(frozen=True)
class Watch:
    """What ``users.watch`` answered: Gmail's history id then, and the watch's end."""

    history_id: str
    expires_at: datetime


def gmail_watch(mailbox: Mailbox, *, topic: str) -> Watch:
    """Start (or renew) the mailbox's watch on INBOX and SENT, publishing to ``topic``."""
    body = {
        "topicName": topic,
        "labelIds": list(WATCHED_LABELS),
        "labelFilterBehavior": "include",
    }
    with GmailMailbox(mailbox) as gmail, gmail_errors("start push notifications"):
        answer = gmail.api.read(gmail.api.users.watch(userId="me", body=body))
    try:
        expires_at = datetime.fromtimestamp(int(answer["expiration"]) / 1000, tz=UTC)
        history_id = str(answer.get("historyId") or "")
    except (KeyError, TypeError, ValueError) as exc:
        raise ProviderError(
            f"Gmail answered users.watch without an expiration: {answer!r}"
        ) from exc
    return Watch(history_id=history_id, expires_at=expires_at)


def gmail_watch_stop(mailbox: Mailbox) -> None:
    """End the mailbox's watch (Gmail stops publishing for it)."""
    with GmailMailbox(mailbox) as gmail, gmail_errors("stop push notifications"):
        gmail.api.read(gmail.api.users.stop(userId="me"))
