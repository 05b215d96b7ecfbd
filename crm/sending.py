"""Sending a one-to-one email to a contact: from a personal mailbox, through the outbox.

``email_queue`` is the one way an email to a contact leaves the CRM (the contact page,
the API, a sequence's step). It writes the message and its outbox row in the caller's
transaction (the engine sends it exactly once, inboxes/outbox/), and the CRM email,
logged on the timeline unless the sender's "log sent email" says otherwise (R10).

Every email goes out with the sender's default font and a plain-text part
(crm/compose.py), and with the open pixel and click redirects when tracking is on
(crm/tracking.py). The tokens name the email, so its id is chosen before the message
is composed."""

from __future__ import annotations

import uuid

from django.db import transaction
from django.utils import timezone

from accounts.models import User
from core.errors import Invalid, NotFoundError
from core.text import one_line
from crm.compose import email_body
from crm.models import Contact, Email, Preferences, TimelineType, TrackedLink
from crm.preferences import never_logged, preferences_for
from crm.rules import check_send_mailbox
from crm.timeline import timeline_add
from crm.tracking import with_tracking
from inboxes.models import Direction, Mailbox
from inboxes.outbox.compose import Recipient
from inboxes.outbox.enqueue import outbox_create


def _toggle(value: bool | None, default: bool) -> bool:
    return default if value is None else value


def email_queue(
    *,
    sender: User,
    contact: Contact,
    mailbox: Mailbox,
    subject: str,
    text: str = "",
    html: str = "",
    log: bool | None = None,
    track_opens: bool | None = None,
    track_clicks: bool | None = None,
    in_reply_to: str = "",
    references: list[str] | None = None,
) -> Email:
    """Queue an email to ``contact``. ``text`` or ``html`` (or both) is the body; a
    toggle left as None takes the sender's preference (R10), and "log" is off by
    default for an address on the sender's never-log list."""
    check_send_mailbox(sender, mailbox)
    if contact.account_id != sender.account_id:
        raise NotFoundError("No such contact.")
    if not subject.strip():
        raise Invalid("Write a subject.", errors={"subject": ["This field may not be blank."]})
    if not text.strip() and not html.strip():
        raise Invalid("Write a message.", errors={"text": ["Write the text or the HTML."]})
    preferences = preferences_for(sender)
    log = _toggle(
        log, preferences.log_sent_email and not never_logged(preferences, contact.canonical_email)
    )
    track_opens = _toggle(track_opens, preferences.track_opens)
    track_clicks = _toggle(track_clicks, preferences.track_clicks)

    email_id = uuid.uuid4()
    plain, markup = email_body(
        text=text,
        html=html,
        font_family=preferences.font_family,
        font_size=preferences.font_size,
    )
    markup, links = with_tracking(markup, email_id, opens=track_opens, clicks=track_clicks)
    with transaction.atomic():
        item = outbox_create(
            mailbox=mailbox,
            from_name=one_line(sender.full_name),
            to=[Recipient(contact.email, one_line(contact.name))],
            subject=one_line(subject),
            text=plain,
            html=markup,
            in_reply_to=in_reply_to,
            references=references,
        )
        now = timezone.now()
        email = Email.objects.create(
            id=email_id,
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
        TrackedLink.objects.bulk_create(
            TrackedLink(email=email, position=position, url=url)
            for position, url in enumerate(links)
        )
        # Preselected on the next email (the row exists: preferences_for made it).
        Preferences.objects.filter(pk=preferences.pk).update(last_mailbox=mailbox)
        if log:
            timeline_add(contact, TimelineType.EMAIL, at=now, email=email)
    return email
