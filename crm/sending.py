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
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from accounts.models import User
from core.errors import Invalid, NotFoundError
from core.text import one_line
from crm.compose import email_body
from crm.models import Contact, Email, Preferences, TimelineType, TrackedLink
from crm.preferences import never_logged, preferences_for
from crm.rules import check_send_mailbox
from crm.timeline import timeline_add, timeline_add_same
from crm.tracking import with_tracking
from inboxes.models import Direction, Mailbox
from inboxes.outbox import Draft, outbox_create_many
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
    log: bool | None = None,
    track_opens: bool | None = None,
    track_clicks: bool | None = None,
) -> list[Email]:
    """``email_queue`` for many contacts from one sender and mailbox (a sequence's
    due steps): the same rules, font, text part, tracking and never-log list, with the
    rows written in bulk in the caller's transaction."""
    check_send_mailbox(sender, mailbox)
    if not drafts:
        return []
    preferences = preferences_for(sender)
    track_opens = _toggle(track_opens, preferences.track_opens)
    track_clicks = _toggle(track_clicks, preferences.track_clicks)
    ids, bodies, links, logged = [], [], [], []
    for draft in drafts:
        email_id = uuid.uuid4()
        plain, markup = email_body(
            text=draft.text,
            html=draft.html,
            font_family=preferences.font_family,
            font_size=preferences.font_size,
        )
        markup, found = with_tracking(markup, email_id, opens=track_opens, clicks=track_clicks)
        ids.append(email_id)
        bodies.append((plain, markup))
        links.append(found)
        logged.append(
            _toggle(log, preferences.log_sent_email)
            and not never_logged(preferences, draft.contact.canonical_email)
        )
    with transaction.atomic():
        items = outbox_create_many(
            mailbox=mailbox,
            from_name=one_line(sender.full_name),
            drafts=[
                Draft(
                    to=[Recipient(d.contact.email, one_line(d.contact.name))],
                    subject=one_line(d.subject),
                    text=plain,
                    html=markup,
                    in_reply_to=d.in_reply_to,
                    references=[d.in_reply_to] if d.in_reply_to else None,
                )
                for d, (plain, markup) in zip(drafts, bodies, strict=True)
            ],
        )
        now = timezone.now()
        emails = Email.objects.bulk_create(
            Email(
                id=email_id,
                account_id=d.contact.account_id,
                contact=d.contact,
                message=item.message,
                mailbox=mailbox,
                direction=Direction.OUTBOUND,
                sent_by=sender,
                logged=logs,
                track_opens=track_opens,
                track_clicks=track_clicks,
                at=now,
            )
            for d, item, email_id, logs in zip(drafts, items, ids, logged, strict=True)
        )
        TrackedLink.objects.bulk_create(
            TrackedLink(email=email, position=position, url=url)
            for email, found in zip(emails, links, strict=True)
            for position, url in enumerate(found)
        )
        shown = [(d, e) for d, e, logs in zip(drafts, emails, logged, strict=True) if logs]
        timeline_add_same(
            [d.contact for d, _ in shown],
            TimelineType.EMAIL,
            at=now,
            details=[{} for _ in shown],
            emails=[e for _, e in shown],
        )
    return emails
