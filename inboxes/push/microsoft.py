"""Microsoft Graph push: a change-notification subscription per folder."""

from __future__ import annotations

from inboxes.models import Mailbox


def graph_subscriptions_keep(mailbox: Mailbox) -> None:
    """Subscribe the mailbox's inbox and sent folders when not subscribed, renew the
    subscriptions before they expire; without GRAPH_PUSH, nothing (polled)."""
    raise NotImplementedError  # issue 18: helper B
