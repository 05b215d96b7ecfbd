"""Helpers for the one-to-one email tests: a personal mailbox without a server, a
contact, an email marked as sent some time ago, a tracking fetch."""

from __future__ import annotations

from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from crm.contacts import contact_create
from crm.models import Email
from crm.sending import email_queue
from inboxes.addresses import canonical_address
from inboxes.models import Mailbox, OutboxItem

HUMAN_AGENT = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0) AppleWebKit/605.1.15 Mail/3774"
HUMAN_IP = "203.0.113.7"


def personal_mailbox(user, address: str | None = None, **fields) -> Mailbox:
    """A connected personal IMAP/SMTP mailbox row; its SMTP host is 127.0.0.1, so only
    a fetch from 127.0.0.1 comes "from the sending server's network"."""
    address = address or user.email
    fields.setdefault("status", "connected")
    return Mailbox.objects.create(
        account=user.account,
        owner=user,
        connected_by=user,
        kind="personal",
        address=address,
        canonical_address=canonical_address(address),
        imap_host="127.0.0.1",
        imap_port=993,
        imap_security="ssl",
        imap_username=address,
        smtp_host="127.0.0.1",
        smtp_port=587,
        smtp_security="starttls",
        smtp_username=address,
        **fields,
    )


def dana(account, **fields):
    return contact_create(
        account=account, email="dana@prospect.example.com", name="Dana Prospect", **fields
    )


def queue(sender, contact, mailbox, **kwargs) -> Email:
    kwargs.setdefault("subject", "Our proposal")
    kwargs.setdefault("text", "Hi Dana,\n\nThe proposal: https://acme.example.com/p/42.\n")
    with transaction.atomic():
        return email_queue(sender=sender, contact=contact, mailbox=mailbox, **kwargs)


def mark_sent(email: Email, seconds_ago: float = 3600) -> None:
    OutboxItem.objects.filter(message_id=email.message_id).update(
        state="sent", sent_at=timezone.now() - timedelta(seconds=seconds_ago)
    )
