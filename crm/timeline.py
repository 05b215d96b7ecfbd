"""Writing a contact's timeline: one row per event, when it happens (crm.models.TimelineEvent).

Every product that puts something on a contact's record calls ``timeline_add``: the
CRM's emails, opens and clicks, sequences, the conversations inbox, meetings."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import Case, F, Q, Value, When

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
    _last_activity_forward([contact.pk], at)
    return event


def _last_activity_forward(contact_ids: list[Any], at: datetime) -> None:
    # A contact's last activity only moves forward (events may arrive out of order).
    Contact.objects.filter(pk__in=contact_ids).filter(
        Q(last_activity_at__isnull=True) | Q(last_activity_at__lt=at)
    ).update(last_activity_at=at)


def timeline_add_many(events: list[TimelineEvent]) -> list[TimelineEvent]:
    """Many events at once (a sync batch, a conversation linked to a contact): one
    INSERT, and one UPDATE that moves each contact's last activity forward."""
    if not events:
        return []
    created = TimelineEvent.objects.bulk_create(events)
    newest: dict[Any, datetime] = {}
    for event in events:
        if event.contact_id not in newest or newest[event.contact_id] < event.at:
            newest[event.contact_id] = event.at
    Contact.objects.filter(pk__in=newest).update(
        last_activity_at=Case(
            *(
                When(
                    Q(pk=pk) & (Q(last_activity_at__isnull=True) | Q(last_activity_at__lt=at)),
                    then=Value(at),
                )
                for pk, at in newest.items()
            ),
            default=F("last_activity_at"),
        )
    )
    return created


def timeline_add_same(
    contacts: list[Contact],
    type: str,
    *,
    at: datetime,
    details: list[dict[str, Any]],
    emails: list[Email | None] | None = None,
) -> None:
    """One event of one kind for many contacts at one moment (a sequence's due steps):
    one insert, one update."""
    if not contacts:
        return
    TimelineEvent.objects.bulk_create(
        TimelineEvent(
            account_id=contact.account_id,
            contact=contact,
            type=type,
            at=at,
            email=email,
            detail=detail,
        )
        for contact, detail, email in zip(
            contacts, details, emails or [None] * len(contacts), strict=True
        )
    )
    _last_activity_forward([c.pk for c in contacts], at)
