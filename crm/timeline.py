"""Writing a contact's timeline: one row per event, when it happens (crm.models.TimelineEvent).

Every product that puts something on a contact's record calls ``timeline_add``: the
CRM's emails, opens and clicks, sequences, the conversations inbox, meetings."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from django.db.models import Q

from crm.models import Contact, Email, TimelineEvent


def timeline_add(
    contact: Contact,
    type: str,
    *,
    at: datetime,
    email: Email | None = None,
    detail: dict[str, Any] | None = None,
) -> TimelineEvent:
    event = TimelineEvent.objects.create(
        account_id=contact.account_id,
        contact=contact,
        type=type,
        at=at,
        email=email,
        detail=detail or {},
    )
    # The contact's last activity only moves forward (events may arrive out of order).
    Contact.objects.filter(pk=contact.pk).filter(
        Q(last_activity_at__isnull=True) | Q(last_activity_at__lt=at)
    ).update(last_activity_at=at)
    return event


def timeline_add_many(events: list[TimelineEvent]) -> None:
    """Unsaved ``events`` written at once (a sync's batch of logged emails); each
    contact's last activity moves forward once."""
    if not events:
        return
    TimelineEvent.objects.bulk_create(events)
    latest: dict[UUID, datetime] = {}
    for event in events:
        if event.contact_id not in latest or latest[event.contact_id] < event.at:
            latest[event.contact_id] = event.at
    for contact_id, at in latest.items():
        Contact.objects.filter(pk=contact_id).filter(
            Q(last_activity_at__isnull=True) | Q(last_activity_at__lt=at)
        ).update(last_activity_at=at)
