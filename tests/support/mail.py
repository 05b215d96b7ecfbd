"""Helpers for mail-engine tests: build messages, connect mailboxes the real way."""

from __future__ import annotations

import itertools
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from django.utils import timezone

from inboxes import services
from inboxes.models import Inbox, Mailbox, OutboxItem
from inboxes.outbox import outbox_send_run

_counter = itertools.count(1)


def make_email(
    *,
    sender: str = "carol@customer.example.com",
    to: str = "support@acme.example.com",
    subject: str | None = None,
    body: str | None = None,
    message_id: str | None = None,
    in_reply_to: str | None = None,
    references: str | None = None,
    cc: str | None = None,
    date=None,
    extra_headers: dict | None = None,
) -> bytes:
    n = next(_counter)
    mime = EmailMessage()
    mime["From"] = sender
    mime["To"] = to
    if cc:
        mime["Cc"] = cc
    mime["Subject"] = subject if subject is not None else f"Question {n}"
    mime["Date"] = format_datetime(date or timezone.now())
    mime["Message-ID"] = message_id or make_msgid(domain="customer.example.com")
    if in_reply_to:
        mime["In-Reply-To"] = in_reply_to
    if references:
        mime["References"] = references
    for name, value in (extra_headers or {}).items():
        mime[name] = value
    mime.set_content(body if body is not None else f"Hello, this is message {n}.\n")
    return mime.as_bytes()


def compose_dsn(
    original: bytes,
    *,
    sender: str,
    recipient: str,
    status: str,
    diagnostic: str,
    reporting_mta: str = "mx.postkamer-tests.example",
) -> bytes:
    """An RFC 3464 delivery report on ``original`` as an MTA writes it: a note for
    people, the machine-readable status, and the original's headers (RFC 6522
    text/rfc822-headers), sent from MAILER-DAEMON to the envelope sender."""
    headers = original.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0].decode("utf-8", "replace")
    boundary = f"dsn-{next(_counter)}"
    now = format_datetime(timezone.now())
    return (
        f"From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>\n"
        f"To: {sender}\n"
        f"Subject: Undelivered Mail Returned to Sender\n"
        f"Date: {now}\n"
        f"Message-ID: {make_msgid(domain=reporting_mta)}\n"
        f"Auto-Submitted: auto-replied\n"
        f"MIME-Version: 1.0\n"
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"\n'
        f"\n"
        f"--{boundary}\n"
        f"Content-Type: text/plain; charset=us-ascii\n"
        f"\n"
        f"This is the mail system at host {reporting_mta}.\n\n"
        f"Your message could not be delivered to one or more recipients.\n\n"
        f"<{recipient}>: {diagnostic}\n"
        f"\n"
        f"--{boundary}\n"
        f"Content-Type: message/delivery-status\n"
        f"\n"
        f"Reporting-MTA: dns; {reporting_mta}\n"
        f"Arrival-Date: {now}\n"
        f"\n"
        f"Final-Recipient: rfc822; {recipient}\n"
        f"Action: failed\n"
        f"Status: {status}\n"
        f"Diagnostic-Code: smtp; {diagnostic}\n"
        f"\n"
        f"--{boundary}\n"
        f"Content-Type: text/rfc822-headers\n"
        f"\n"
        f"{headers}\n"
        f"\n"
        f"--{boundary}--\n"
    ).encode()


def connect_imap_mailbox(
    *, actor, dovecot, smtp_server, user, address, kind="team", inbox=None, backfill_days=30
) -> Mailbox:
    username, password = user
    imap = dovecot.imap_settings(username, password)
    smtp = smtp_server.smtp_settings(username, password)
    mailbox = services.mailbox_connect(
        actor=actor,
        address=address,
        kind=kind,
        imap=services.ServerInput(
            imap.host, imap.port, imap.security, imap.username, imap.password
        ),
        smtp=services.ServerInput(
            smtp.host, smtp.port, smtp.security, smtp.username, smtp.password
        ),
        acknowledge_team_visibility=True,
        inbox=inbox,
        backfill_days=backfill_days,
    )
    return mailbox


def team_inbox(account, name="Support", from_name="Acme Support") -> Inbox:
    return Inbox.objects.create(account=account, name=name, from_name=from_name)


def send_due(item: OutboxItem) -> str:
    """A send run of the item's mailbox, as the send worker runs it (every due item
    of the mailbox goes); the item's state afterwards."""
    outbox_send_run(item.mailbox_id)
    return OutboxItem.objects.get(pk=item.pk).state
