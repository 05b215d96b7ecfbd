"""Helpers for the CRM's mail tests: a rep's personal mailbox on Dovecot, contacts,
a sequence they are enrolled in, delivery reports and machine replies."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from email.utils import format_datetime, make_msgid

from django.utils import timezone

from crm.contacts import contact_create
from crm.models import Contact, Enrollment, Sequence
from inboxes.mime import parse_message
from inboxes.models import Mailbox, MailboxFolder
from inboxes.providers.base import RawMessage
from inboxes.sync.ingest import ingest_batch
from tests.support.mail import connect_imap_mailbox

REP = "bo@acme.example.com"


@dataclass
class Rep:
    user: object
    mailbox: Mailbox
    mail_user: tuple[str, str]


def connect_rep(member, dovecot, smtp_server, mail_user, backfill_days=30) -> Rep:
    mailbox = connect_imap_mailbox(
        actor=member,
        dovecot=dovecot,
        smtp_server=smtp_server,
        user=mail_user,
        address=REP,
        kind="personal",
        backfill_days=backfill_days,
    )
    return Rep(member, mailbox, mail_user)


def contact(account, email: str, owner=None) -> Contact:
    return contact_create(account=account, email=email, owner=owner)


def enrol(contact: Contact, mailbox: Mailbox, *, stop_on_auto_reply: bool = False) -> Enrollment:
    sequence = Sequence.objects.create(
        account_id=contact.account_id,
        owner=mailbox.owner,
        name="Follow-up",
        mailbox=mailbox,
        stop_on_auto_reply=stop_on_auto_reply,
    )
    return Enrollment.objects.create(
        account_id=contact.account_id,
        sequence=sequence,
        contact=contact,
        next_step_at=timezone.now(),
    )


def dsn(*, original_message_id: str, recipient: str, status: str, to: str = REP) -> bytes:
    """A delivery status notification (RFC 3464) as an MTA writes it."""
    action = "failed" if status.startswith("5") else "delayed"
    return (
        "From: Mail Delivery System <MAILER-DAEMON@mx.customer.example.com>\n"
        f"To: {to}\n"
        "Subject: Undelivered Mail Returned to Sender\n"
        f"Date: {format_datetime(timezone.now())}\n"
        f"Message-ID: {make_msgid(domain='mx.customer.example.com')}\n"
        "Auto-Submitted: auto-replied\n"
        "MIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="dsn-1"\n'
        "\n--dsn-1\n"
        "Content-Type: text/plain; charset=us-ascii\n\n"
        f"I could not deliver your message to {recipient}.\n"
        "\n--dsn-1\n"
        "Content-Type: message/delivery-status\n\n"
        "Reporting-MTA: dns; mx.customer.example.com\n\n"
        f"Final-Recipient: rfc822; {recipient}\nAction: {action}\nStatus: {status}\n"
        f"Diagnostic-Code: smtp; {status} mailbox unavailable\n"
        "\n--dsn-1\n"
        "Content-Type: text/rfc822-headers\n\n"
        f"Message-ID: {original_message_id}\nFrom: {to}\nTo: {recipient}\n"
        "\n--dsn-1--\n"
    ).encode()


def bounce_fields(*, original_message_id: str, recipient: str, status: str) -> dict:
    """``ParsedMessage.bounce`` for ``dsn(...)`` (inboxes/mime/message.py)."""
    return {
        "original_message_id": original_message_id,
        "recipients": [
            {
                "address": recipient,
                "action": "failed" if status.startswith("5") else "delayed",
                "status": status,
                "diagnostic": f"smtp; {status} mailbox unavailable",
            }
        ],
    }


def ingest_classified(
    mailbox: Mailbox, raw: bytes, *, kind: str, bounce: dict | None = None, key: str = ""
):
    """Store ``raw`` through the engine's ingest, as a sync of the mailbox's INBOX does
    once the parser has classified it as ``kind`` (bounce or auto_reply). The parser's
    own classification is used when it gives one; until then the fields it fills are
    set here, exactly where the parser sets them (``ParsedMessage.kind`` / ``bounce``)."""
    parsed = parse_message(raw)
    if parsed.kind == "email":
        parsed = dataclasses.replace(parsed, kind=kind, bounce=bounce)
    folder = MailboxFolder.objects.get(mailbox=mailbox, role="inbox")
    return ingest_batch(
        mailbox=mailbox,
        folder=folder,
        raws=[RawMessage(key=key or parsed.dedupe_key, raw=raw)],
        cursor=folder.cursor,
        backfill=False,
        parsed=[parsed],
    )
