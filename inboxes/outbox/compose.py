"""Composing an email as it will go out: headers, threading, the Message-ID; and the
message as ``parse_message`` reads it, for its row, without parsing it back.

Written here rather than with ``email.message.EmailMessage`` (policy SMTP): that cost
~1.3 ms a message in header objects, refolding and the generator, and parsing the
bytes back another ~0.5 ms, three quarters of a sequence step (bench/sequences.py).
What goes out is a small, fixed subset of MIME, simple to get exactly right:

* header fields of 7-bit ASCII only, folded at whitespace to lines of at most 76
  characters (RFC 5322 2.2.3); anything but printable ASCII in a subject or display
  name (and any text that looks like an encoded-word) goes in RFC 2047 encoded-words,
  UTF-8 in base64, never splitting a character; a display name with specials is a
  quoted-string; a domain outside ASCII is written in IDNA; a line break in any value
  is refused (ValueError), as the stdlib policy refuses it;
* one text/plain part, or multipart/alternative with a text/plain and a text/html
  part, UTF-8 (RFC 2045/2046): 7bit when the text is ASCII with lines of at most 78
  characters, else quoted-printable or base64, whichever is shorter (the stdlib's
  choice, without its 8bit, which needs 8BITMIME of every server on the way).

A message with attachments or a calendar invitation (rarer, and larger) is
multipart/mixed around that, with each attachment in base64 and its file name in RFC
2231 form where it is not ASCII; a calendar part joins the alternatives as
``text/calendar; method=...`` (RFC 6047) and is attached again as ``invite.ics`` for
clients that only look at attachments. Those rows are read back with
``parse_message`` (the portable path; their size, not the parse, is what costs).

The composer knows every field it wrote, so the row's fields come from
``inboxes.mime.parsed_as_composed`` (the parser's own decoders on those values,
without its MIME parser); tests/inboxes/test_compose.py holds both to
``parse_message`` of the bytes.
"""

from __future__ import annotations

import base64
import binascii
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import encode_rfc2231, format_datetime, make_msgid

from django.utils import timezone

from inboxes.mime import ParsedMessage, parse_message, parsed_as_composed

LINE_LENGTH = 76  # RFC 2047 2: a line with an encoded-word is at most 76 characters
BODY_LINE_LENGTH = 78  # beyond it a text part is encoded (RFC 5322 2.1.1)
MAX_REFERENCES = 20
# UTF-8 bytes per encoded-word: 52 characters of base64, 64 with "=?utf-8?b?" and "?=",
# so "Subject: " and one word fit a line.
_WORD_BYTES = 39
# The longest whitespace-free run written as is; longer ones are encoded (which can be
# folded) so that no header line grows past LINE_LENGTH.
_LONGEST_WORD = 60
_ATOMS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?: [A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
# Where a field may be folded: before whitespace that something other than whitespace
# follows (a continuation line of only whitespace is not allowed).
_FOLD_POINT = re.compile(r"[ \t](?=[^ \t])")
_MSG_ID = re.compile(r"<[\x21-\x3b\x3d\x3f-\x7e]+>")  # printable ASCII, no "<" or ">"
_MIME_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,62}/[a-z0-9][a-z0-9!#$&^_.+-]{0,62}")
_CALENDAR_METHODS = frozenset({"REQUEST", "CANCEL", "PUBLISH", "REPLY"})


@dataclass(frozen=True)
class Recipient:
    address: str
    name: str = ""


@dataclass(frozen=True)
class Attachment:
    """A file sent with an email (``data`` is the whole file)."""

    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class CalendarPart:
    """An iCalendar object (RFC 5545 text) sent as an invitation (RFC 6047): ``method``
    is the VCALENDAR's METHOD, REQUEST or CANCEL for a booking."""

    ics: str
    method: str


@dataclass(frozen=True)
class Composed:
    raw: bytes
    message_id: str
    # What parse_message(raw) returns.
    parsed: ParsedMessage


def compose(
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
    attachments: Sequence[Attachment] = (),
    calendar: CalendarPart | None = None,
) -> Composed:
    """The message as it will go out, its Message-ID, and what its row holds.

    ``automatic``: no person pressed Send (a booking invitation, a notification):
    marked ``Auto-Submitted: auto-generated`` (RFC 3834) so that responders stay quiet;
    check the recipients with inboxes/automail.py first. ``attachments`` and
    ``calendar``: see the module's docstring."""
    message_id = make_msgid(domain=_domain(from_address.rsplit("@", 1)[-1]))
    fields = [
        ("From", _mailbox(from_address, from_name)),
        ("To", ", ".join(_mailbox(r.address, r.name) for r in to)),
    ]
    if cc:
        fields.append(("Cc", ", ".join(_mailbox(r.address, r.name) for r in cc)))
    fields += [
        ("Subject", _unstructured(subject)),
        ("Date", format_datetime(timezone.now())),
        ("Message-ID", message_id),
    ]
    if automatic:
        fields.append(("Auto-Submitted", "auto-generated"))
    replied = _thread_ids([in_reply_to])
    if replied:
        fields.append(("In-Reply-To", replied[0]))
    refs = _thread_ids([*(references or []), *replied])[-MAX_REFERENCES:]
    if refs:
        fields.append(("References", " ".join(refs)))
    fields.append(("MIME-Version", "1.0"))

    parts = [("plain", _Part(text))]
    if html:
        parts.append(("html", _Part(html)))
    if attachments or calendar:
        part_fields, body = _with_files(parts, attachments, calendar)
        fields += part_fields
        lines = [_folded(name, value) for name, value in fields]
        raw = "\r\n".join(lines).encode("ascii") + b"\r\n\r\n" + body
        return Composed(raw=raw, message_id=message_id, parsed=parse_message(raw))
    if len(parts) == 1:
        fields += parts[0][1].fields("plain")
        body = parts[0][1].written
    else:
        part_fields, body = _multipart(
            "alternative", [(part.fields(subtype), part.written) for subtype, part in parts]
        )
        fields += part_fields

    lines = [_folded(name, value) for name, value in fields]
    header_block = "\r\n".join(lines).encode("ascii")
    parsed = parsed_as_composed(
        # As the parser keeps a field: its value after "Name:", folding included.
        fields=[
            (name, line[len(name) + 1 :].lstrip(" \t"))
            for (name, _), line in zip(fields, lines, strict=True)
        ],
        header_block=header_block,
        body=body,
        parts=[(subtype, part.decoded) for subtype, part in parts],
    )
    return Composed(raw=header_block + b"\r\n\r\n" + body, message_id=message_id, parsed=parsed)


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
    attachments: Sequence[Attachment] = (),
    calendar: CalendarPart | None = None,
) -> tuple[bytes, str]:
    """The message as it will go out, and its Message-ID (``compose`` without the row;
    the other arguments as there)."""
    composed = compose(
        from_address=from_address,
        from_name=from_name,
        to=to,
        cc=cc,
        subject=subject,
        text=text,
        html=html,
        in_reply_to=in_reply_to,
        references=references,
        automatic=automatic,
        attachments=attachments,
        calendar=calendar,
    )
    return composed.raw, composed.message_id


# --- Header fields --------------------------------------------------------------------------------


def _refuse_line_breaks(value: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError("Header values may not contain line breaks.")
    return value


def _encoded_words(text: str) -> list[str]:
    """``text`` as RFC 2047 encoded-words (UTF-8, base64), split between characters."""
    data = text.encode("utf-8")
    words = []
    start = 0
    while start < len(data):
        end = min(start + _WORD_BYTES, len(data))
        while end < len(data) and data[end] & 0xC0 == 0x80:  # inside a character
            end -= 1
        words.append("=?utf-8?b?" + base64.b64encode(data[start:end]).decode("ascii") + "?=")
        start = end
    return words


def _plain_enough(text: str) -> bool:
    """Written as is: printable ASCII, nothing a reader would decode, foldable."""
    return (
        text.isascii()
        and text.isprintable()
        and "=?" not in text
        and all(len(word) <= _LONGEST_WORD for word in text.split(" "))
    )


def _unstructured(text: str) -> str:
    _refuse_line_breaks(text)
    return text if _plain_enough(text) else " ".join(_encoded_words(text))


def _phrase(name: str) -> str:
    """A display name: atoms as they are, a quoted-string, or encoded-words."""
    _refuse_line_breaks(name)
    if not _plain_enough(name):
        return " ".join(_encoded_words(name))
    if _ATOMS.fullmatch(name):
        return name
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _domain(domain: str) -> str:
    if domain.isascii():
        return domain
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ValueError(f"Not a valid domain: {domain!r}.") from exc


def _mailbox(address: str, name: str) -> str:
    _refuse_line_breaks(address)
    local, at, domain = address.rpartition("@")
    if not (at and local and local.isascii() and local.isprintable()) or set("<>") & set(address):
        # A non-ASCII local part needs SMTPUTF8, which this composer does not write;
        # "<" or ">" would end the angle-addr early.
        raise ValueError(f"Not an address this server can send to: {address!r}.")
    spec = f"{local}@{_domain(domain)}"
    return f"{_phrase(name)} <{spec}>" if name else spec


def _thread_ids(ids: list[str]) -> list[str]:
    """Message-IDs for In-Reply-To and References, each once: only well-formed ASCII
    ones (anything else would not thread anyway, and could not go in a header)."""
    return list(dict.fromkeys(i for i in ids if i and _MSG_ID.fullmatch(i)))


def _folded(name: str, value: str) -> str:
    """``Name: value`` folded at whitespace into lines of at most LINE_LENGTH (a longer
    whitespace-free piece, such as a long address, stays whole on its line)."""
    line = f"{name}: {value}"
    if len(line) <= LINE_LENGTH:
        return line
    lines = []
    start = last = 0
    for match in _FOLD_POINT.finditer(line, len(name) + 3):
        point = match.start()
        if point - start > LINE_LENGTH and last > start:
            lines.append(line[start:last])
            start = last
        last = point
    if len(line) - start > LINE_LENGTH and last > start:
        lines.append(line[start:last])
        start = last
    lines.append(line[start:])
    return "\r\n".join(lines)


def _header_block(fields: list[tuple[str, str]]) -> bytes:
    return "\r\n".join(_folded(name, value) for name, value in fields).encode("ascii")


# --- Body parts -----------------------------------------------------------------------------------


class _Part:
    """One UTF-8 text part: its transfer encoding, its body as written (CRLF lines)
    and its content as a reader decodes it."""

    def __init__(self, text: str) -> None:
        lines = text.encode("utf-8").splitlines()
        content = b"\r\n".join(lines) + b"\r\n"
        self.decoded = content
        if content.isascii() and max(map(len, lines), default=0) <= BODY_LINE_LENGTH:
            self.encoding, self.written = "7bit", content
            return
        # Lines of at most 76 characters, trailing whitespace and "=" encoded.
        quoted = binascii.b2a_qp(content, istext=True)
        encoded = base64.encodebytes(content).replace(b"\n", b"\r\n")
        if len(quoted) <= len(encoded):
            self.encoding, self.written = "quoted-printable", quoted
        else:
            self.encoding, self.written = "base64", encoded

    def fields(self, subtype: str) -> list[tuple[str, str]]:
        return [
            ("Content-Type", f'text/{subtype}; charset="utf-8"'),
            ("Content-Transfer-Encoding", self.encoding),
        ]


def _boundary(bodies: list[bytes]) -> str:
    """A boundary that no part's body contains (RFC 2046 5.1.1), in the stdlib's form."""
    while True:
        boundary = f"==============={random.randrange(10**19):019d}=="
        if not any(boundary.encode() in body for body in bodies):
            return boundary


_Written = tuple[list[tuple[str, str]], bytes]  # a part's header fields and its body


def _multipart(subtype: str, children: list[_Written]) -> _Written:
    boundary = _boundary([body for _, body in children])
    body = (
        b"".join(
            f"--{boundary}\r\n".encode() + _header_block(fields) + b"\r\n\r\n" + written + b"\r\n"
            for fields, written in children
        )
        + f"--{boundary}--\r\n".encode()
    )
    return [("Content-Type", f'multipart/{subtype}; boundary="{boundary}"')], body


def _with_files(
    texts: list[tuple[str, _Part]], attachments: Sequence[Attachment], calendar: CalendarPart | None
) -> _Written:
    """multipart/mixed: the alternatives (text, html, the invitation), then the files."""
    alternatives = [(part.fields(subtype), part.written) for subtype, part in texts]
    files = list(attachments)
    if calendar is not None:
        method = calendar.method.upper()
        if method not in _CALENDAR_METHODS:
            raise ValueError(f"Not an iCalendar method: {calendar.method!r}.")
        invite = _Part(calendar.ics)
        alternatives.append(
            (
                [
                    ("Content-Type", f'text/calendar; charset="utf-8"; method={method}'),
                    ("Content-Transfer-Encoding", invite.encoding),
                ],
                invite.written,
            )
        )
        files.append(Attachment("invite.ics", "application/ics", invite.decoded))
    content = _multipart("alternative", alternatives)
    if not files:
        return content
    return _multipart("mixed", [content, *(_file(attachment) for attachment in files)])


def _file(attachment: Attachment) -> _Written:
    content_type = attachment.content_type.strip().lower()
    if not _MIME_TYPE.fullmatch(content_type) or content_type.startswith("multipart/"):
        content_type = "application/octet-stream"
    name = _refuse_line_breaks(attachment.filename).replace("\\", "_").replace("/", "_")
    name = name.strip() or "attachment"
    return (
        [
            ("Content-Type", f"{content_type}; {_file_name_param('name', name)}"),
            ("Content-Transfer-Encoding", "base64"),
            ("Content-Disposition", f"attachment; {_file_name_param('filename', name)}"),
        ],
        base64.encodebytes(attachment.data).replace(b"\n", b"\r\n"),
    )


_PARAM_PIECE = 60  # characters of an encoded file name per RFC 2231 continuation


def _file_name_param(param: str, name: str) -> str:
    """``name="..."`` when plain and short; else RFC 2231 encoded (``name*0*=utf-8''...;
    name*1*=...``) in pieces that fold, so no header line outgrows its limit."""
    if name.isascii() and name.isprintable() and len(name) <= _PARAM_PIECE:
        quoted = name.replace("\\", "\\\\").replace('"', '\\"')
        return f'{param}="{quoted}"'
    encoded = encode_rfc2231(name, "utf-8")  # utf-8''%C3%A9t%C3%A9.pdf
    pieces = []
    start = 0
    while start < len(encoded):
        end = min(start + _PARAM_PIECE, len(encoded))
        # Never split a %XX escape between two pieces.
        percent = encoded.rfind("%", max(start, end - 2), end)
        if percent != -1 and end < len(encoded):
            end = percent
        pieces.append(encoded[start:end])
        start = end
    return "; ".join(f"{param}*{index}*={piece}" for index, piece in enumerate(pieces))
