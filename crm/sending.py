"""Sending a one-to-one email to a contact: from a personal mailbox, through the outbox.

``email_queue`` is the one way an email to a contact leaves the CRM (the contact page,
the API, a sequence's step). It writes the message and its outbox row in the caller's
transaction (the engine sends it exactly once, inboxes/outbox/), and the CRM email,
logged on the timeline unless the sender's "log sent email" says otherwise (R10)."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from accounts.models import User
from core.text import one_line
from crm.models import Contact, Email, TimelineType
from crm.rules import check_send_mailbox
from crm.timeline import timeline_add
from inboxes.models import Direction, Mailbox
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
