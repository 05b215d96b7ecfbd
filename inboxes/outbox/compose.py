"""Composing an email as it will go out: headers, threading, the Message-ID."""

from __future__ import annotations

from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid

from django.utils import timezone


@dataclass(frozen=True)
class Recipient:
    address: str
    name: str = ""


def _address(recipient: Recipient) -> Address:
    return Address(display_name=recipient.name, addr_spec=recipient.address)


def build_mime(
    *,
    from_address: str,
    from_name: str,
    to: list[Recipient],
    cc: list[Recipient],
    subject: str,
    text: str,
    html: str = "",
    in_reply_to: str = "",
    references: list[str] | None = None,
    automatic: bool = False,
) -> tuple[bytes, str]:
    """The message as it will go out, and its Message-ID.

    ``automatic``: no person pressed Send (a booking invitation, a notification):
    marked ``Auto-Submitted: auto-generated`` (RFC 3834) so that responders stay quiet;
    check the recipients with inboxes/automail.py first."""
    domain = from_address.rsplit("@", 1)[-1]
    message_id = make_msgid(domain=domain)
    mime = EmailMessage(policy=SMTP)
    mime["From"] = Address(display_name=from_name, addr_spec=from_address)
    mime["To"] = [_address(r) for r in to]
    if cc:
        mime["Cc"] = [_address(r) for r in cc]
    mime["Subject"] = subject
    mime["Date"] = format_datetime(timezone.now())
    mime["Message-ID"] = message_id
    if automatic:
        mime["Auto-Submitted"] = "auto-generated"
    if in_reply_to:
        mime["In-Reply-To"] = in_reply_to
    refs = [*(references or []), *([in_reply_to] if in_reply_to else [])]
    refs = list(dict.fromkeys(ref for ref in refs if ref))
    if refs:
        mime["References"] = " ".join(refs[-20:])
    mime.set_content(text)
    if html:
        mime.add_alternative(html, subtype="html")
    return mime.as_bytes(), message_id
