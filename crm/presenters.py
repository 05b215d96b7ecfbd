"""The CRM email as the API and the pages show it (DESIGN.md 4, "email")."""

from __future__ import annotations

from typing import Any

from crm.models import Email
from crm.tracking import without_pixel
from inboxes.delivery import delivery_of


def party(entry: dict[str, str]) -> dict[str, str]:
    return {"name": entry.get("name", ""), "address": entry.get("address", "")}


def email_data(email: Email) -> dict[str, Any]:
    """``email`` with ``message`` (and its ``outbox`` and ``bounces``) loaded."""
    message = email.message
    return {
        "id": str(email.pk),
        "contact": str(email.contact_id),
        "direction": email.direction,
        "mailbox": str(email.mailbox_id) if email.mailbox_id else None,
        "from": {"name": message.from_name, "address": message.from_address},
        "to": [party(p) for p in message.to],
        "cc": [party(p) for p in message.cc],
        "subject": message.subject,
        "text": message.text,
        "html": without_pixel(message.html) if email.track_opens else message.html,
        "sent_at": message.sent_at or email.at,
        "message_id": message.message_id,
        "in_reply_to": message.in_reply_to,
        "logged": email.logged,
        # "Show original": the stored bytes, under the same access rule (inboxes/access.py).
        "raw_url": f"/messages/{email.message_id}/raw/",
        "delivery": delivery_of(message),
        "tracking": {
            "opens": email.opens,
            "clicks": email.clicks,
            "machine_opens": email.machine_opens,
        },
    }
