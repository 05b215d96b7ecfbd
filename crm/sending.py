"""Sending a one-to-one email to a contact: from a personal mailbox, through the outbox.

``email_queue`` is the one way an email to a contact leaves the CRM (the contact page,
the API, a sequence's step). It writes the message and its outbox row in the caller's
transaction (the engine sends it exactly once, inboxes/outbox/), and the CRM email,
logged on the timeline unless the sender's "log sent email" says otherwise (R10)."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from accounts.models import User
from core.text import one_line
from crm.models import Contact, Email, TimelineType
from crm.rules import check_send_mailbox
from crm.timeline import timeline_add, timeline_add_many
from inboxes.models import Direction, Mailbox
from inboxes.outbox import Draft, outbox_create_many
from inboxes.outbox.compose import Recipient
from inboxes.outbox.enqueue import outbox_create


def email_queue(
    *,
    sender: User,
    contact: Contact,
    mailbox: Mailbox,
    subject: str,
    text: str,
    html: str = "",
    log: bool = True,
    track_opens: bool = False,
    track_clicks: bool = False,
    in_reply_to: str = "",
    references: list[str] | None = None,
) -> Email:
    check_send_mailbox(sender, mailbox)
    with transaction.atomic():
        item = outbox_create(
            mailbox=mailbox,
            from_name=one_line(sender.full_name),
            to=[Recipient(contact.email, one_line(contact.name))],
            subject=one_line(subject),
            text=text,
            html=html,
            in_reply_to=in_reply_to,
            references=references,
        )
        now = timezone.now()
        email = Email.objects.create(
            account_id=contact.account_id,
            contact=contact,
            message=item.message,
            mailbox=mailbox,
            direction=Direction.OUTBOUND,
            sent_by=sender,
            logged=log,
            track_opens=track_opens,
            track_clicks=track_clicks,
            at=now,
        )
        if log:
            timeline_add(contact, TimelineType.EMAIL, at=now, email=email)
    return email


@dataclass(frozen=True)
class ContactDraft:
    """One email of ``emails_queue_many``: to ``contact``, threaded by ``in_reply_to``."""

    contact: Contact
    subject: str
    text: str
    html: str = ""
    in_reply_to: str = ""


def emails_queue_many(
    *,
    sender: User,
    mailbox: Mailbox,
    drafts: list[ContactDraft],
    log: bool = True,
    track_opens: bool = False,
    track_clicks: bool = False,
) -> list[Email]:
    """``email_queue`` for many contacts from one sender and mailbox (a sequence's
    due steps): the same rules and rows, written in bulk in the caller's transaction."""
    check_send_mailbox(sender, mailbox)
    if not drafts:
        return []
    with transaction.atomic():
        items = outbox_create_many(
            mailbox=mailbox,
            from_name=one_line(sender.full_name),
            drafts=[
                Draft(
                    to=[Recipient(d.contact.email, one_line(d.contact.name))],
                    subject=one_line(d.subject),
                    text=d.text,
                    html=d.html,
                    in_reply_to=d.in_reply_to,
                    references=[d.in_reply_to] if d.in_reply_to else None,
                )
                for d in drafts
            ],
        )
        now = timezone.now()
        emails = Email.objects.bulk_create(
            Email(
                account_id=d.contact.account_id,
                contact=d.contact,
                message=item.message,
                mailbox=mailbox,
                direction=Direction.OUTBOUND,
                sent_by=sender,
                logged=log,
                track_opens=track_opens,
                track_clicks=track_clicks,
                at=now,
            )
            for d, item in zip(drafts, items, strict=True)
        )
        if log:
            timeline_add_many(
                [d.contact for d in drafts],
                TimelineType.EMAIL,
                at=now,
                details=[{} for _ in drafts],
                emails=list(emails),
            )
    return emails
