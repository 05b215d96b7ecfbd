"""Delivery reports (bounces) on emails to contacts, arriving in a personal mailbox.

A hard bounce (RFC 3463 class 5) marks the contact (``bounced_at``: warn before the
next email), goes on their timeline and stops their sequences; a soft one (class 4,
or a delay) is only noted on the timeline. The engine's parser classifies the report
(``Message.kind`` "bounce", ``Message.bounce``); this ties it to the email it reports
on. Bounces are rare: a query or two each is fine."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

from django.utils import timezone

from crm.enrollments import enrollments_stop
from crm.models import Contact, Email, StopReason, TimelineEvent, TimelineType
from crm.parties import canonical_or_empty
from crm.timeline import timeline_add
from inboxes.delivery import is_hard_failure
from inboxes.models import Direction, Mailbox, Message


def original_message_id(bounce: dict[str, Any] | None) -> str:
    value = (bounce or {}).get("original_message_id") or ""
    return value if isinstance(value, str) else ""


def reported_originals(mailbox: Mailbox, message_ids: Collection[str]) -> set[str]:
    """Those of ``message_ids`` that are emails to contacts sent from ``mailbox`` (by
    the CRM, or by its owner and logged from Sent): one query."""
    wanted = {m for m in message_ids if m}
    if not wanted:
        return set()
    return set(
        Email.objects.filter(
            mailbox=mailbox, direction=Direction.OUTBOUND, message__message_id__in=wanted
        ).values_list("message__message_id", flat=True)
    )


def _recipients_for(contact: Contact, recipients: list[dict[str, Any]], only: bool) -> list[dict]:
    """The report's lines about ``contact``; when none names them (an alias or a
    forward rewrote the address) and they were the email's only contact, all of them."""
    mine = [
        r
        for r in recipients
        if isinstance(r, dict)
        and canonical_or_empty(str(r.get("address") or "")) == contact.canonical_email
    ]
    if not mine and only:
        mine = [r for r in recipients if isinstance(r, dict)]
    return mine


def _already_noted(email: Email, report: Message) -> bool:
    return TimelineEvent.objects.filter(
        contact_id=email.contact_id, email=email, detail__bounce=str(report.pk)
    ).exists()


def bounces_deliver(mailbox: Mailbox, reports: Iterable[Message]) -> None:
    """Each of ``reports`` (kind bounce) that reports on an email of ``mailbox`` to a
    contact: tied to it, on the contact's timeline, and a hard one stops their
    sequences (backfill or not: a dead address is dead, whenever the report came)."""
    for report in reports:
        original = original_message_id(report.bounce)
        if not original:
            continue
        emails = list(
            Email.objects.filter(
                mailbox=mailbox, direction=Direction.OUTBOUND, message__message_id=original
            ).select_related("contact", "message")
        )
        if not emails:
            continue
        if report.bounce_of_id is None:
            Message.objects.filter(pk=report.pk, bounce_of__isnull=True).update(
                bounce_of=emails[0].message
            )
            report.bounce_of_id = emails[0].message_id
        recipients = (report.bounce or {}).get("recipients") or []
        for email in emails:
            _note(email, report, _recipients_for(email.contact, recipients, len(emails) == 1))


def _note(email: Email, report: Message, lines: list[dict[str, Any]]) -> None:
    if _already_noted(email, report):
        return
    contact = email.contact
    at = report.sent_at or timezone.now()
    hard = [line for line in lines if is_hard_failure(line)]
    shown = hard[0] if hard else (lines[0] if lines else {})
    status = str(shown.get("status") or "")
    diagnostic = str(shown.get("diagnostic") or "")
    timeline_add(
        contact,
        TimelineType.EMAIL,
        at=at,
        email=email,
        detail={
            "event": "bounced",
            "hard": bool(hard),
            "status": status,
            "diagnostic": diagnostic,
            "address": str(shown.get("address") or contact.email),
            "bounce": str(report.pk),
        },
    )
    if not hard:
        return
    Contact.objects.filter(pk=contact.pk).update(
        bounced_at=at,
        bounce_detail=" ".join(part for part in (status, diagnostic) if part)[:2000],
        updated_at=timezone.now(),
    )
    enrollments_stop(contact, StopReason.BOUNCED)
