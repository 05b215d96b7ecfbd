"""Mailboxes that broke and recovered, and gaps found by reconciliation: one notice
per incident, not one per failed sync; recovery closes it and the notice says so."""

from __future__ import annotations

from uuid import UUID

from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone
from django.utils.formats import date_format

from inboxes.error_wording import mailbox_state
from inboxes.models import Mailbox, MailboxStatus
from notifications.models import Incident, Kind, Notification, SubjectType
from notifications.services import account_admins, mailbox_people, notify

BROKEN = (MailboxStatus.ERROR, MailboxStatus.NEEDS_REAUTH)


def _problem(mailbox: Mailbox) -> str:
    """In the words of every other page that shows a mailbox's problem."""
    problem = mailbox_state(mailbox).problem
    if problem is None:  # it works again already
        return f"{mailbox.address} stopped syncing and sending for a moment."
    return f"{mailbox.address} stopped syncing and sending: {problem.reason}. {problem.fix}"


def _open_incident(mailbox_id: UUID | str) -> Incident | None:
    return Incident.objects.filter(
        kind=Kind.MAILBOX_NEEDS_ATTENTION,
        subject_type=SubjectType.MAILBOX,
        subject_id=str(mailbox_id),
        resolved_at__isnull=True,
    ).first()


def mailbox_health_changed(mailbox_id: UUID | str) -> None:
    """Open an incident when the mailbox is broken and none is open; close the open one
    when it works again (or was disconnected). Safe to call any number of times."""
    mailbox = Mailbox.objects.select_related("owner", "account").filter(pk=mailbox_id).first()
    if mailbox is None:
        return
    current = _open_incident(mailbox.pk)
    if mailbox.status in BROKEN:
        if current is not None:
            return
        try:
            with transaction.atomic():
                incident = Incident.objects.create(
                    account_id=mailbox.account_id,
                    kind=Kind.MAILBOX_NEEDS_ATTENTION,
                    subject_type=SubjectType.MAILBOX,
                    subject_id=str(mailbox.pk),
                    detail=mailbox.last_error[:2000],
                )
                notify(
                    account_id=mailbox.account_id,
                    users=mailbox_people(mailbox),
                    kind=Kind.MAILBOX_NEEDS_ATTENTION,
                    text=_problem(mailbox),
                    url=reverse("settings-mailbox", args=[mailbox.pk]),
                    subject_type=SubjectType.MAILBOX,
                    subject_id=mailbox.pk,
                    key=f"incident:{incident.pk}",
                    incident=incident,
                )
        except IntegrityError:
            return  # another report opened it a moment ago
        return
    if current is None:
        return
    now = timezone.now()
    with transaction.atomic():
        closed = Incident.objects.filter(pk=current.pk, resolved_at__isnull=True).update(
            resolved_at=now, updated_at=now
        )
        if not closed:
            return
        how = "was disconnected" if mailbox.status == MailboxStatus.DISCONNECTED else "works again"
        when = date_format(timezone.localtime(now), "DATETIME_FORMAT")
        for notice in Notification.objects.filter(incident=current):
            notice.text = f"{notice.text} Resolved: {mailbox.address} {how} ({when})."[:2000]
            notice.resolved_at = now
            notice.save(update_fields=["text", "resolved_at", "updated_at"])


def sync_gap_found(mailbox_id: UUID | str, folder: str, missing: int, still_missing: int) -> None:
    """Reconciliation found mail the sync had not stored: the admins hear of it once per
    check that found some."""
    if missing <= 0:
        return
    mailbox = Mailbox.objects.filter(pk=mailbox_id).first()
    if mailbox is None:
        return
    if still_missing:
        outcome = f"{still_missing} could not be imported yet; the sync keeps trying."
    else:
        outcome = "All of them have been imported now."
    checked = timezone.now()
    notify(
        account_id=mailbox.account_id,
        users=account_admins(mailbox.account_id),
        kind=Kind.SYNC_GAP,
        text=(
            f"The check of {mailbox.address} ({folder}) found {missing} message(s) on the "
            f"server that the sync had missed. {outcome}"
        ),
        url=reverse("settings-mailbox", args=[mailbox.pk]),
        subject_type=SubjectType.MAILBOX,
        subject_id=mailbox.pk,
        key=f"gap:{mailbox.pk}:{folder}:{checked:%Y%m%d%H%M}",
    )
