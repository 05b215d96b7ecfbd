"""The MIME tree walked part by part: bodies, attachments and attached messages.

The walk is iterative and bounded (depth and part count), and a part that cannot
be read is reported in the problems instead of aborting the message.
"""

from __future__ import annotations

import binascii
import io
import re
from dataclasses import dataclass, field
from email import errors as email_errors
from email.generator import BytesGenerator
from email.message import Message
from email.policy import compat32

from inboxes.mime.charsets import _b64decode, _raw_to_text, _to_bytes
from inboxes.mime.headers import _fold_whitespace, _header_text, _unfold, parse_params
from inboxes.mime.text import _body_text, _normalise_newlines
from inboxes.mime.tnef import is_tnef, unpack_tnef

# Deeper than any real mail; the walk below is iterative, so this only bounds
# the work a hostile message can cause.
MAX_MIME_DEPTH = 100
MAX_PARTS = 5000
MAX_FILENAME_LENGTH = 200


@dataclass(frozen=True)
class ParsedAttachment:
    filename: str
    content_type: str
    payload: bytes = field(repr=False)
    # Without the angle brackets, so it compares equal to what follows "cid:".
    content_id: str | None
    inline: bool

    @property
    def size(self) -> int:
        return len(self.payload)


_BLANK_LINE = re.compile(rb"(?:\r\n|\r(?!\n)|\n)(?:\r\n|\r(?!\n)|\n)")
_EXTENSIONS = {
    "text/plain": ".txt",
    "text/html": ".html",
    "text/calendar": ".ics",
    "message/rfc822": ".eml",
    "message/delivery-status": ".txt",
    "text/rfc822-headers": ".txt",
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/gif": ".gif",
    "application/pdf": ".pdf",
}


def _split_raw(raw: bytes) -> tuple[bytes, bytes]:
    """Header block and body of the raw message (body is b"" when there is none)."""
    # A leading blank line means "no headers" to the parser as well.
    if raw.startswith(b"\r\n"):
        return b"", raw[2:]
    if raw.startswith((b"\n", b"\r")):
        return b"", raw[1:]
    match = _BLANK_LINE.search(raw)
    if match is None:
        return raw, b""
    return raw[: match.start()], raw[match.end() :]


def _raw_headers(part: Message) -> dict[str, list[str]]:
    headers: dict[str, list[str]] = {}
    for name, value in part.raw_items():
        if isinstance(value, str):
            headers.setdefault(name.strip().lower(), []).append(value)
    return headers


def _first(headers: dict[str, list[str]], name: str) -> str | None:
    values = headers.get(name)
    return values[0] if values else None


def _stored_payload(part: Message) -> str | bytes | list[Message] | None:
    """The payload as the parser stored it: text, 8-bit bytes or the subparts. The
    attribute is private to email.message (typeshed leaves it out)."""
    payload: str | bytes | list[Message] | None = getattr(part, "_payload", None)
    return payload


def _transfer_decode(part: Message, cte_header: str | None, problems: list[str]) -> bytes:
    # Read the stored payload directly: get_payload(decode=False) lossily
    # decodes 8-bit data, and get_payload(decode=True) ignores a
    # Content-Transfer-Encoding with stray whitespace or quotes.
    payload = _stored_payload(part)
    if isinstance(payload, bytes):
        data = payload
    elif isinstance(payload, str):
        data = _to_bytes(payload)
    else:
        return b""
    cte = _raw_to_text(_unfold(cte_header or "")).strip().strip("\"'").strip().lower()
    if cte == "base64":
        decoded, clean = _b64decode(data)
        if not clean:
            problems.append("invalid base64 in a part")
        return decoded
    if cte == "quoted-printable":
        return binascii.a2b_qp(data)
    if cte in ("x-uuencode", "uuencode", "uue", "x-uue"):
        decoded_uu = part.get_payload(decode=True)
        return decoded_uu if isinstance(decoded_uu, bytes) else data
    return data


def _safe_filename(name: str) -> str:
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = " ".join(name.split())
    # Drops control and format characters such as U+202E (right-to-left override).
    name = "".join(char for char in name if char.isprintable()).strip(" .")
    if len(name) > MAX_FILENAME_LENGTH:
        stem, dot, extension = name.rpartition(".")
        if dot and 0 < len(extension) <= 16:
            name = stem[: MAX_FILENAME_LENGTH - len(extension) - 1] + "." + extension
        else:
            name = name[:MAX_FILENAME_LENGTH]
    return name


# max_line_length=0 writes headers back exactly as received instead of
# refolding them (which would, e.g., break the inner message's DKIM signature).
_GENERATOR_POLICIES = {
    "\n": compat32.clone(max_line_length=0),
    "\r\n": compat32.clone(max_line_length=0, linesep="\r\n"),
}


def _serialise(part: Message, linesep: str) -> bytes:
    buffer = io.BytesIO()
    policy = _GENERATOR_POLICIES[linesep]
    BytesGenerator(buffer, mangle_from_=False, policy=policy).flatten(part)
    # The generator writes the container's own headers first; keep what is inside.
    return _split_raw(buffer.getvalue())[1]


@dataclass
class _Collected:
    linesep: str = "\n"
    texts: list[str] = field(default_factory=list)
    htmls: list[str] = field(default_factory=list)
    attachments: list[ParsedAttachment] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    # Bodies found inside winmail.dat: the message's body when it has no other.
    tnef_texts: list[str] = field(default_factory=list)
    tnef_htmls: list[str] = field(default_factory=list)


def _walk(root: Message, linesep: str) -> _Collected:
    collected = _Collected(linesep=linesep)
    stack: list[tuple[Message, int]] = [(root, 0)]
    seen = 0
    while stack:
        part, depth = stack.pop()
        seen += 1
        if seen > MAX_PARTS:
            collected.problems.append(f"more than {MAX_PARTS} MIME parts; the rest was skipped")
            break
        if depth > MAX_MIME_DEPTH:
            collected.problems.append(
                f"MIME nesting deeper than {MAX_MIME_DEPTH} levels; inner parts were skipped"
            )
            continue
        try:
            _visit(part, depth, root, stack, collected)
        except Exception as exc:
            collected.problems.append(f"a MIME part could not be read ({type(exc).__name__})")
    if not any(t.strip() for t in collected.texts) and not any(h.strip() for h in collected.htmls):
        collected.texts.extend(collected.tnef_texts)
        collected.htmls.extend(collected.tnef_htmls)
    return collected


def _visit(
    part: Message,
    depth: int,
    root: Message,
    stack: list[tuple[Message, int]],
    collected: _Collected,
) -> None:
    for defect in getattr(part, "defects", ()):
        if isinstance(defect, email_errors.StartBoundaryNotFoundDefect):
            collected.problems.append("multipart boundary never appears; body kept as text")
        elif isinstance(defect, email_errors.NoBoundaryInMultipartDefect):
            collected.problems.append("multipart without a boundary; body kept as text")
    content_type = part.get_content_type()
    maintype, _, subtype = content_type.partition("/")
    payload = _stored_payload(part)
    if isinstance(payload, list):
        if maintype == "multipart":
            stack.extend((child, depth + 1) for child in reversed(payload))
        else:
            _collect_message_part(part, content_type, collected)
        return
    headers = _raw_headers(part)
    type_params = parse_params(_first(headers, "content-type"))
    disposition_header = _first(headers, "content-disposition")
    disposition = _disposition(disposition_header)
    filename = parse_params(disposition_header).get("filename") or type_params.get("name") or ""
    cte_header = _first(headers, "content-transfer-encoding")
    data = _transfer_decode(part, cte_header, collected.problems)
    if maintype == "multipart":
        # The boundary never appeared: the body is all there is, keep it as text.
        collected.texts.append(_body_text(data, type_params, "plain"))
        return
    is_body_type = content_type in ("text/plain", "text/html")
    if is_body_type and disposition != "attachment" and (not filename or part is root):
        text = _body_text(data, type_params, subtype)
        (collected.texts if subtype == "plain" else collected.htmls).append(text)
        return
    content_id_header = _fold_whitespace(_raw_to_text(_first(headers, "content-id") or ""))
    content_id = content_id_header.strip("<>").strip() or None
    name = _safe_filename(filename) or _unnamed(collected, content_type)
    collected.attachments.append(
        ParsedAttachment(
            filename=name,
            content_type=content_type,
            payload=data,
            content_id=content_id,
            inline=disposition == "inline" or (disposition is None and content_id is not None),
        )
    )
    if is_tnef(content_type, name):
        _collect_tnef(data, collected)


def _collect_tnef(data: bytes, collected: _Collected) -> None:
    """The files and body of a winmail.dat, besides the winmail.dat itself."""
    try:
        unpacked = unpack_tnef(data)
    except Exception:  # tnefparse raises anything from ValueError to struct.error
        collected.problems.append("could not unpack winmail.dat; it is kept as an attachment")
        return
    for filename, content_type, payload in unpacked.files:
        collected.attachments.append(
            ParsedAttachment(
                filename=_safe_filename(filename) or _unnamed(collected, content_type),
                content_type=content_type,
                payload=payload,
                content_id=None,
                inline=False,
            )
        )
    if unpacked.text.strip():
        collected.tnef_texts.append(_normalise_newlines(unpacked.text))
    if unpacked.html.strip():
        collected.tnef_htmls.append(unpacked.html)


def _disposition(header: str | None) -> str | None:
    if header is None:
        return None
    return _unfold(header).split(";", 1)[0].strip().lower() or None


def _unnamed(collected: _Collected, content_type: str) -> str:
    return f"unnamed-{len(collected.attachments) + 1}" + _EXTENSIONS.get(content_type, ".bin")


def _collect_message_part(part: Message, content_type: str, collected: _Collected) -> None:
    """message/rfc822 and friends become one attachment holding the inner message."""
    headers = _raw_headers(part)
    inner = _stored_payload(part)
    subject = ""
    if content_type == "message/rfc822" and inner and isinstance(inner[0], Message):
        subject = _header_text(_first(_raw_headers(inner[0]), "subject"))
    try:
        data = _serialise(part, collected.linesep)
    except Exception:  # includes RecursionError on absurdly nested forwards
        data = b""
        collected.problems.append(f"could not serialise an attached {content_type}")
    disposition_header = _first(headers, "content-disposition")
    filename = _safe_filename(parse_params(disposition_header).get("filename", ""))
    if not filename and subject:
        filename = _safe_filename(subject[: MAX_FILENAME_LENGTH - 4]) + ".eml"
    filename = filename or _unnamed(collected, content_type)
    disposition = _disposition(disposition_header)
    collected.attachments.append(
        ParsedAttachment(
            filename=filename,
            content_type=content_type,
            payload=data,
            content_id=None,
            inline=disposition == "inline",
        )
    )
