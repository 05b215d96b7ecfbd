"""The entry point: ``parse_message`` turns one raw message into a ``ParsedMessage``
with its dedupe keys (``inboxes/mime/dedupe.py``; the parsing policy is described in
``inboxes/mime/__init__.py``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32
from typing import Any

from inboxes.mime.addresses import Address, parse_addresses
from inboxes.mime.dedupe import body_digest, dedupe_key, legacy_dedupe_key
from inboxes.mime.headers import _header_text, _msg_ids, _parse_date, _unfold
from inboxes.mime.html import _REMOTE_IMAGE, sanitise_html
from inboxes.mime.machine import classify
from inboxes.mime.parts import (
    ParsedAttachment,
    _Collected,
    _first,
    _raw_headers,
    _split_raw,
    _walk,
)
from inboxes.mime.text import _body_text, html_to_text

MAX_REFERENCES = 50

EXTRA_HEADERS = (
    "thread-index",
    "thread-topic",
    "auto-submitted",
    "precedence",
    "list-id",
    "x-auto-response-suppress",
    "delivered-to",
    # Not in the original list, but the auto-reply and bounce detection needs
    # them and they are free to keep.
    "x-autoreply",
    "x-autorespond",
    "return-path",
    # The language the search stems a message's words in (inboxes/0013_message_search).
    "content-language",
)


@dataclass(frozen=True)
class ParsedMessage:
    message_id: str
    in_reply_to: str
    references: list[str]
    subject: str
    from_: Address | None
    reply_to: list[Address]
    to: list[Address]
    cc: list[Address]
    date: datetime | None
    text: str
    html: str
    attachments: list[ParsedAttachment]
    headers: dict[str, str]
    dedupe_key: str
    error: str
    has_remote_images: bool
    # Machine mail: "email", "auto_reply" or "bounce" (inboxes.models.MessageKind);
    # for a bounce, {"original_message_id", "recipients": [{address, action, status,
    # diagnostic}]}.
    kind: str = "email"
    bounce: dict[str, Any] | None = None
    # The key this message had before v2 keys (inboxes/mime/dedupe.py): rows stored
    # then are found by it.
    legacy_dedupe_key: str = ""

    @property
    def dedupe_keys(self) -> tuple[str, str]:
        """Every key a stored copy of this message may have: (v2, v1)."""
        return (self.dedupe_key, self.legacy_dedupe_key)


# --- The parser ---------------------------------------------------------------------


class _TolerantMessage(Message):
    """The parser's own parameter lookups must not abort the whole parse."""

    def get_param(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().get_param(*args, **kwargs)
        except Exception:
            return args[1] if len(args) > 1 else kwargs.get("failobj")

    def get_params(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().get_params(*args, **kwargs)
        except Exception:
            return args[0] if args else kwargs.get("failobj")

    def get_boundary(self, failobj: Any = None) -> Any:
        # A parameter folded over two lines (boundary="simple CRLF  boundary") is
        # unfolded: the line break goes, the whitespace stays (RFC 5322 3.2.2).
        boundary = super().get_boundary(failobj)
        if isinstance(boundary, str) and ("\n" in boundary or "\r" in boundary):
            return _FOLD.sub("", boundary)
        return boundary


_FOLD = re.compile(r"\r?\n|\r")
_PARSER = BytesParser(_class=_TolerantMessage, policy=compat32)
_HEADER_LINE = re.compile(rb"[\x21-\x39\x3b-\x7e]+:")
_HEADER_LINE_SPACED = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]+:")


def _repair_header_block(block: bytes) -> tuple[bytes, int]:
    """Drop junk lines among the headers (the parser would end the headers there)."""
    lines = block.splitlines(keepends=True)
    if not lines or not (_HEADER_LINE.match(lines[0]) or lines[0].startswith(b"From ")):
        # Not a header block at all: the parser will keep it all as body text.
        return block, 0
    kept: list[bytes] = []
    dropped = 0
    changed = False
    for index, line in enumerate(lines):
        if _HEADER_LINE.match(line) or line[:1] in (b" ", b"\t"):
            kept.append(line)
        elif index == 0 and line.startswith(b"From "):
            kept.append(line)  # mbox separator; the parser knows it
        elif match := _HEADER_LINE_SPACED.match(line):
            # Obsolete "Subject : x" syntax (RFC 5322 4.5).
            kept.append(match.group(1) + b":" + line[match.end() :])
            changed = True
        else:
            dropped += 1
            changed = True
    if not changed:
        return block, 0
    return b"".join(kept), dropped


# --- Entry point --------------------------------------------------------------------


def parse_message(raw: bytes) -> ParsedMessage:
    """Parse one raw RFC 5322 message; never raises for any bytes."""
    if isinstance(raw, bytearray | memoryview):
        raw = bytes(raw)
    try:
        return _parse(raw)
    except Exception as exc:
        return _fallback(raw, f"could not parse message ({type(exc).__name__})")


def _fallback(raw: bytes, error: str) -> ParsedMessage:
    try:
        header_block, body = _split_raw(raw)
    except Exception:
        header_block, body = b"", raw
    body_hash = body_digest(body)
    return ParsedMessage(
        message_id="",
        in_reply_to="",
        references=[],
        subject="",
        from_=None,
        reply_to=[],
        to=[],
        cc=[],
        date=None,
        text="",
        html="",
        attachments=[],
        headers={},
        dedupe_key=dedupe_key(header_block, body_hash),
        error=error,
        has_remote_images=False,
        legacy_dedupe_key=legacy_dedupe_key("", "", "", "", b"", body_digest_hex=body_hash.hex()),
    )


def _parse(raw: bytes) -> ParsedMessage:
    problems: list[str] = []
    if not raw or raw.isspace():
        return _fallback(raw, "empty message")
    header_block, body = _split_raw(raw)
    fixed_block, dropped = _repair_header_block(header_block)
    if dropped:
        problems.append(f"skipped {dropped} malformed header line(s)")
    if fixed_block is not header_block:
        separator = raw[len(header_block) : len(raw) - len(body)]
        raw_for_parser = fixed_block + separator + body
    else:
        raw_for_parser = raw
    # The body is a copy of most of the message: hash it now and let it go before
    # the parser makes its own copies (a big message's peak is ~8x its size).
    body_hash = body_digest(body)
    del body
    try:
        root = _PARSER.parsebytes(raw_for_parser)
        too_deep = False
    except RecursionError:
        root = _PARSER.parsebytes(raw_for_parser, headersonly=True)
        too_deep = True

    headers = _raw_headers(root)
    if not headers:
        problems.append("no header fields found")
    if too_deep:
        collected = _Collected(problems=["MIME structure nested too deeply to parse; body skipped"])
    else:
        # Attached messages are written back with the line endings they came with.
        collected = _walk(root, "\r\n" if b"\r\n" in header_block else "\n")
    return _assemble(headers, header_block, body_hash, collected, problems)


def _assemble(
    headers: dict[str, list[str]],
    header_block: bytes,
    body_hash: bytes,
    collected: _Collected,
    problems: list[str],
) -> ParsedMessage:
    """The ParsedMessage of a message's raw header fields (name -> values, as the
    parser keeps them, folding included) and its walked body."""
    message_ids = _msg_ids(_first(headers, "message-id"), bare_needs_at=False)
    message_id = message_ids[0] if message_ids else ""
    reply_ids = _msg_ids(_first(headers, "in-reply-to"))
    # dict.fromkeys: ordered de-duplication that stays linear on hostile input.
    all_references = _msg_ids(" ".join(headers.get("references", [])))
    references = list(dict.fromkeys(all_references))[-MAX_REFERENCES:]

    senders = parse_addresses(headers.get("from", []))
    subject = _header_text(_first(headers, "subject"))
    raw_date = " ".join(_unfold(_first(headers, "date") or "").split())
    extras = {
        name: _header_text(_first(headers, name)) for name in EXTRA_HEADERS if name in headers
    }

    problems.extend(collected.problems)
    html_body = "\n".join(
        sanitise_html(markup) for markup in collected.htmls if markup.strip()
    ).strip()
    texts = [text for text in collected.texts if text.strip()]
    text = "\n\n".join(texts) if texts else html_to_text(html_body)
    in_reply_to = reply_ids[0] if reply_ids else ""
    kind, bounce = classify(
        headers,
        subject=subject,
        sender=senders[0].address if senders else "",
        text=text,
        attachments=collected.attachments,
        in_reply_to=in_reply_to,
        references=references,
    )

    return ParsedMessage(
        message_id=message_id,
        in_reply_to=in_reply_to,
        references=references,
        subject=subject,
        from_=senders[0] if senders else None,
        reply_to=parse_addresses(headers.get("reply-to", [])),
        to=parse_addresses(headers.get("to", [])),
        cc=parse_addresses(headers.get("cc", [])),
        date=_parse_date(raw_date),
        text=text,
        html=html_body,
        attachments=collected.attachments,
        headers=extras,
        dedupe_key=dedupe_key(header_block, body_hash),
        error="; ".join(dict.fromkeys(problems)),
        has_remote_images=bool(_REMOTE_IMAGE.search(html_body)),
        legacy_dedupe_key=legacy_dedupe_key(
            message_id,
            senders[0].address if senders else "",
            raw_date,
            subject,
            b"",
            body_digest_hex=body_hash.hex(),
        ),
        kind=kind,
        bounce=bounce,
    )


# --- A message composed here ---------------------------------------------------------


def parsed_as_composed(
    *,
    fields: list[tuple[str, str]],
    header_block: bytes,
    body: bytes,
    parts: list[tuple[str, bytes]],
) -> ParsedMessage:
    """What ``parse_message`` returns for a message the caller has just composed, without
    parsing it back: the same decoding of the same header values, the same body rules,
    the same keys. ``fields``: the header fields as written (name, value with its
    folding, as the parser keeps it); ``header_block`` and ``body``: the raw message's
    two halves around its blank line; ``parts``: each body part's subtype ("plain" or
    "html") and its UTF-8 content as transfer-decoding gives it back.

    For messages without attachments, of UTF-8 text parts only, as the outbox writes
    them (inboxes/outbox/compose.py); tests/inboxes/test_compose.py holds the result to
    ``parse_message``'s for a range of such messages."""
    headers: dict[str, list[str]] = {}
    for name, value in fields:
        headers.setdefault(name.lower(), []).append(value)
    collected = _Collected(linesep="\r\n")
    for subtype, content in parts:
        text = _body_text(content, {"charset": "utf-8"}, subtype)
        (collected.texts if subtype == "plain" else collected.htmls).append(text)
    return _assemble(headers, header_block, body_digest(body), collected, [])
