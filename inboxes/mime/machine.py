"""Machine mail: delivery reports (bounces) and auto-replies, told apart from mail a
person wrote. Pure Python (it runs in the sync's parse helper, without Django).

``classify`` answers ``(kind, bounce)``: ``kind`` is "email", "auto_reply" or
"bounce"; for a bounce, ``{"original_message_id": "<...>" or "", "recipients":
[{address, action, status, diagnostic, server_text}]}``. A bounce is never also an
auto-reply (an MTA's report carries Auto-Submitted too).

Bounces: an RFC 3464 ``multipart/report; report-type=delivery-status`` (Postfix,
Sendmail, Exchange/Office 365, Gmail, Amazon SES and most others today), read per
recipient; failing that, the plain-text shapes of Exim, qmail, Postfix and old
Exchange, found by their sender (MAILER-DAEMON, postmaster...), their subject or
``X-Failed-Recipients`` and then read by ``inboxes/mime/bounce_text.py``. The
original's Message-ID comes from a ``message/rfc822`` or ``text/rfc822-headers``
part (RFC 6522 allows either), else the quoted headers in the text, else the
report's own ``In-Reply-To``/``References``.

Auto-replies, on what the message says about itself: RFC 3834 ``Auto-Submitted``
other than "no"; ``X-Autoreply`` / ``X-Autorespond``; ``Precedence: auto_reply``,
``bulk`` or ``junk``; ``X-Auto-Response-Suppress`` (Exchange puts it on what it
generates); and Exchange's out-of-office shape, for servers that send neither: a
subject starting with "Automatic reply:" (or its Outlook translations, or "Out of
Office:") together with an Exchange marker (``Thread-Topic``, ``Thread-Index`` or any
``X-MS-Exchange-*`` header). A subject alone is never enough: people write
"Automatic reply: ..." too.
"""

from __future__ import annotations

import re
from typing import Any

from inboxes.mime.bounce_text import (
    failed_recipients_in_text,
    plain_words,
    status_in,
)
from inboxes.mime.charsets import decode_bytes
from inboxes.mime.headers import _header_text, _msg_ids, _unfold, parse_params
from inboxes.mime.parts import ParsedAttachment, _split_raw

EMAIL = "email"
AUTO_REPLY = "auto_reply"
BOUNCE = "bounce"

_DAEMON_SENDERS = frozenset(
    {
        "mailer-daemon",
        "mailer_daemon",
        "maildaemon",
        "postmaster",
        "mail-daemon",
        "mailerdaemon",
        "microsoftexchange329e71ec88ae4615bbc36ab6ce41109e",
        "mail.delivery.system",
        "mail-delivery-system",
        "mail-delivery-subsystem",
        "bounce",
        "bounces",
    }
)
_BOUNCE_SUBJECT = re.compile(
    r"^\s*(undeliverable|undelivered mail|undeliverable mail|mail delivery failed"
    r"|delivery status notification|failure notice|returned mail|delivery failure"
    r"|mail system error|delivery has failed|message not delivered|non.?delivery"
    r"|unzustellbar|onbestelbaar|non remis|no se puede entregar)",
    re.IGNORECASE,
)
_OOF_SUBJECT = re.compile(
    r"^\s*(automatic reply|auto(matic)?[- ]?reply|out of office|autosvar|automatisch antwoord"
    r"|automatische antwort|réponse automatique|respuesta automática|risposta automatica"
    r"|resposta automática)\s*:",
    re.IGNORECASE,
)
_REPORT_PARTS = ("message/delivery-status", "message/global-delivery-status")
_ORIGINAL_PARTS = (
    "message/rfc822",
    "text/rfc822-headers",
    "message/global",
    "message/global-headers",
)
_QUOTED_MESSAGE_ID = re.compile(r"^[ \t>]*message-id[ \t]*:[ \t]*(<[^<>\s]+>)", re.I | re.M)
_MAX_REPORT_BYTES = 256 * 1024
# A report on a mail to a thousand people is kept, its first recipients named.
MAX_RECIPIENTS = 100


def classify(
    headers: dict[str, list[str]],
    *,
    subject: str,
    sender: str,
    text: str,
    attachments: list[ParsedAttachment],
    in_reply_to: str,
    references: list[str],
) -> tuple[str, dict[str, Any] | None]:
    """``headers``: the raw header fields by lower-case name (``_raw_headers``).

    Never raises: a report it cannot read is mail like any other (the parse it is
    part of must not be lost to it)."""
    try:
        bounce = _bounce(headers, subject, sender, text, attachments, in_reply_to, references)
        if bounce is not None:
            return BOUNCE, bounce
        if is_auto_reply(headers, subject):
            return AUTO_REPLY, None
    except Exception:
        return EMAIL, None
    return EMAIL, None


# --- Auto-replies ------------------------------------------------------------------------


def _value(headers: dict[str, list[str]], name: str) -> str:
    values = headers.get(name)
    return _header_text(values[0]).strip().lower() if values else ""


def is_auto_reply(headers: dict[str, list[str]], subject: str) -> bool:
    auto_submitted = _value(headers, "auto-submitted").split(";", 1)[0].strip()
    if auto_submitted and auto_submitted != "no":
        return True
    for name in ("x-autoreply", "x-autorespond"):
        if name in headers and _value(headers, name) not in ("no", "false", "0"):
            return True
    if _value(headers, "precedence") in ("auto_reply", "bulk", "junk"):
        return True
    if _value(headers, "x-auto-response-suppress"):
        return True
    if _OOF_SUBJECT.match(subject or ""):
        return (
            "thread-topic" in headers
            or "thread-index" in headers
            or any(name.startswith("x-ms-exchange-") for name in headers)
        )
    return False


# --- Bounces -------------------------------------------------------------------------------


def _is_daemon(sender: str) -> bool:
    local = sender.rsplit("@", 1)[0].lower()
    return local in _DAEMON_SENDERS or local.startswith("mailer-daemon")


def _bounce(
    headers: dict[str, list[str]],
    subject: str,
    sender: str,
    text: str,
    attachments: list[ParsedAttachment],
    in_reply_to: str,
    references: list[str],
) -> dict[str, Any] | None:
    content_type = (headers.get("content-type") or [""])[0]
    is_report = "report" in content_type.lower() and (
        parse_params(content_type).get("report-type", "").lower() == "delivery-status"
    )
    reports = [a for a in attachments if a.content_type in _REPORT_PARTS]
    failed_header = headers.get("x-failed-recipients")
    looks_like = (
        _is_daemon(sender)
        or bool(_BOUNCE_SUBJECT.match(subject or ""))
        or "x-ms-exchange-message-is-ndr" in headers
    )
    if not (is_report or reports or failed_header or looks_like):
        return None  # the common case: a person's email, decided without reading the body
    recipients: list[dict[str, str]] = []
    for report in reports:
        recipients.extend(_delivery_status(report.payload))
    if not recipients:
        recipients = failed_recipients_in_text(text)
    if failed_header:
        _add_failed_header(recipients, failed_header, text)
    if not recipients and not (is_report or reports):
        # A daemon's or a bounce-like subject's mail that names no failed recipient is
        # not a report (a postmaster answering a question, a newsletter titled so).
        return None
    return {
        "original_message_id": _original_message_id(attachments, text, in_reply_to, references),
        "recipients": recipients[:MAX_RECIPIENTS],
    }


def _add_failed_header(recipients: list[dict[str, str]], values: list[str], text: str) -> None:
    known = {r["address"].lower() for r in recipients}
    for value in values:
        for token in _header_text(value).split(","):
            address = token.strip().strip("<>")
            if "@" in address and address.lower() not in known:
                known.add(address.lower())
                status = status_in(text) or "5.0.0"
                recipients.append(
                    {
                        "address": address,
                        "action": "failed",
                        "status": status,
                        "diagnostic": plain_words(status, text),
                        "server_text": "",
                    }
                )


def _fields(block: str) -> dict[str, str]:
    """One block of a delivery-status part: its fields (continuation lines joined)."""
    fields: dict[str, str] = {}
    name = ""
    for line in block.splitlines():
        if line[:1] in (" ", "\t") and name:
            fields[name] += " " + line.strip()
        elif ":" in line:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            fields.setdefault(name, value.strip())
    return fields


def _typed_value(value: str) -> str:
    """ "rfc822; ann@x.example" -> "ann@x.example" (RFC 3464's address-type prefix)."""
    kind, separator, rest = value.partition(";")
    return rest.strip() if separator and "@" not in kind else value.strip()


def _delivery_status(payload: bytes) -> list[dict[str, str]]:
    content = decode_bytes(payload[:_MAX_REPORT_BYTES]).replace("\r\n", "\n")
    blocks = [b for b in re.split(r"\n[ \t]*\n", content) if b.strip()]
    recipients: list[dict[str, str]] = []
    # The first block is about the message; each further one about one recipient.
    for block in blocks[1:] if len(blocks) > 1 else blocks:
        fields = _fields(block)
        address = _typed_value(
            fields.get("final-recipient") or fields.get("original-recipient", "")
        )
        if "@" not in address:
            continue
        address = address.strip("<>")
        action = fields.get("action", "").split()[0].lower() if fields.get("action") else ""
        server_text = _typed_value(fields.get("diagnostic-code", ""))
        status = status_in(fields.get("status", "")) or status_in(server_text)
        if not status:
            status = "5.0.0" if action == "failed" else ("4.0.0" if action == "delayed" else "")
        recipients.append(
            {
                "address": address,
                "action": action or "failed",
                "status": status,
                "diagnostic": plain_words(status, server_text),
                "server_text": server_text[:1000],
            }
        )
    return recipients


def _original_message_id(
    attachments: list[ParsedAttachment], text: str, in_reply_to: str, references: list[str]
) -> str:
    for attachment in attachments:
        if attachment.content_type in _ORIGINAL_PARTS:
            header_block = _split_raw(attachment.payload[:_MAX_REPORT_BYTES])[0]
            if attachment.content_type.startswith("text/") and not header_block.strip():
                header_block = attachment.payload[:_MAX_REPORT_BYTES]
            found = _QUOTED_MESSAGE_ID.search(decode_bytes(header_block).replace("\r\n", "\n"))
            if found:
                ids = _msg_ids(_unfold(found.group(1)))
                if ids:
                    return ids[0]
    found = _QUOTED_MESSAGE_ID.search(text or "")
    if found:
        ids = _msg_ids(found.group(1))
        if ids:
            return ids[0]
    if in_reply_to:
        return in_reply_to
    return references[-1] if references else ""
