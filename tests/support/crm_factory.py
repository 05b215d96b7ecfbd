"""CRM rows for tests: contacts and emails logged on their timelines, as the sending
and logging code (crm/sending.py, the personal-mail consumer) leaves them."""

from __future__ import annotations

import hashlib
from datetime import datetime

from django.utils import timezone

from crm.contacts import contact_create
from crm.models import Contact, Email, TimelineType
from crm.timeline import timeline_add
from inboxes.models import Direction, Message


def make_contact(account, email: str, **kwargs) -> Contact:
    return contact_create(account=account, email=email, **kwargs)


def make_logged_email(
    contact: Contact,
    *,
    subject: str = "Hello",
    direction: str = Direction.OUTBOUND,
    at: datetime | None = None,
    opens: int = 0,
    clicks: int = 0,
) -> Email:
    """An email with ``contact`` on its timeline (no outbox row: a sent, logged email)."""
    at = at or timezone.now()
    key = hashlib.sha256(f"{contact.pk}{subject}{at.isoformat()}".encode()).hexdigest()[:64]
    ours = {"name": "Ann Smith", "address": "ann@acme.example.com"}
    theirs = {"name": contact.name, "address": contact.email}
    sender, recipient = (ours, theirs) if direction == Direction.OUTBOUND else (theirs, ours)
    message = Message.objects.create(
        account_id=contact.account_id,
        dedupe_key=key,
        direction=direction,
        message_id=f"<{key[:20]}@acme.example.com>",
        subject=subject,
        from_name=sender["name"],
        from_address=sender["address"],
        to=[recipient],
        sent_at=at,
        text=f"{subject}, body.",
    )
    email = Email.objects.create(
        account_id=contact.account_id,
        contact=contact,
        message=message,
        direction=direction,
        at=at,
        opens=opens,
        clicks=clicks,
    )
    timeline_add(contact, TimelineType.EMAIL, at=at, email=email)
    return email
