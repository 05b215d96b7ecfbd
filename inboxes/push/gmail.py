"""Gmail push: ``users.watch`` on INBOX and SENT with the operator's Pub/Sub topic."""

from __future__ import annotations

from inboxes.models import Mailbox


def gmail_watch_keep(mailbox: Mailbox) -> None:
    """Start the mailbox's watch when it has none, renew it daily (it lapses after
    7 days); without GMAIL_PUBSUB_TOPIC, nothing (the mailbox is polled)."""
    raise NotImplementedError  # issue 18: helper A
