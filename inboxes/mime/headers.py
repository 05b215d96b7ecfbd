"""Header values: RFC 2047 encoded-words and undeclared 8-bit text, the
parameters of Content-Type / Content-Disposition (RFC 2231), Message-IDs and dates.
"""

from __future__ import annotations

import binascii
import re
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_tz
from typing import Any

from inboxes.mime.charsets import _b64decode, _raw_to_text, _to_bytes, decode_bytes

# Longer "Message-IDs" are junk and would not fit an index anyway.
MAX_MESSAGE_ID_LENGTH = 500

# --- Header decoding ----------------------------------------------------------------

# RFC 2047 encoded-word, with an optional RFC 2231 language ("utf-8*en").
_ENCODED_WORD = re.compile(r"=\?([^?\s*]+)(?:\*[^?\s]*)?\?([bBqQ])\?([^?\s]*)\?=")
_CONTROL_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _unfold(value: str) -> str:
    return value.replace("\r", "").replace("\n", "")


def _fold_whitespace(text: str) -> str:
    return " ".join(_CONTROL_CHARS.sub("", text).split())


def decode_header(value: str | None) -> str:
    """Decode a raw (surrogate-escaped) header value: RFC 2047 words and raw 8-bit."""
    if not value:
        return ""
    value = _unfold(value)
    if "=?" not in value:
        return _raw_to_text(value)
    # (charset or None for raw text, payload); adjacent words in one charset are
    # joined as bytes first, because encoders split multibyte characters.
    runs: list[tuple[str | None, Any]] = []
    position = 0
    for match in _ENCODED_WORD.finditer(value):
        between = value[position : match.start()]
        position = match.end()
        charset, encoding, encoded = match.groups()
        data = _to_bytes(encoded)
        if encoding in "bB":
            payload, _ = _b64decode(data)
        else:
            payload = binascii.a2b_qp(data, header=True)
        previous_encoded = bool(runs) and runs[-1][0] is not None
        # RFC 2047 6.2: whitespace between two encoded-words is not displayed.
        if between and not (between.isspace() and previous_encoded):
            runs.append((None, between))
            previous_encoded = False
        key = charset.lower()
        if previous_encoded and runs[-1][0] == key:
            runs[-1] = (key, runs[-1][1] + payload)
        else:
            runs.append((key, payload))
    if position < len(value):
        runs.append((None, value[position:]))
    return "".join(
        _raw_to_text(payload) if charset is None else decode_bytes(payload, charset)
        for charset, payload in runs
    )


def _header_text(value: str | None) -> str:
    return _fold_whitespace(decode_header(value))


# --- Parameters (Content-Type / Content-Disposition) --------------------------------

_RFC2231_NAME = re.compile(r"^(?P<base>[^*]+)(?:\*(?P<num>\d{1,4}))?(?P<ext>\*)?$")


def _split_params(value: str) -> list[str]:
    pieces: list[str] = []
    current: list[str] = []
    in_quote = escaped = False
    for char in value:
        if in_quote:
            current.append(char)
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_quote = False
        elif char == ";":
            pieces.append("".join(current))
            current = []
        else:
            if char == '"':
                in_quote = True
            current.append(char)
    pieces.append("".join(current))
    return pieces


def _unquote(value: str) -> str:
    value = value.strip()
    if value.startswith('"'):
        value = value[1:-1] if len(value) > 1 and value.endswith('"') else value[1:]
        return re.sub(r"\\(.)", r"\1", value)
    return value


def parse_params(value: str | None) -> dict[str, str]:
    """Decoded parameters of a structured header, RFC 2231 and RFC 2047 included."""
    if not value:
        return {}
    plain: dict[str, str] = {}
    extended: dict[str, dict[int, tuple[str, bool]]] = {}
    for piece in _split_params(_unfold(value))[1:]:
        name, sep, raw_value = piece.partition("=")
        if not sep:
            continue
        name = name.strip().lower()
        match = _RFC2231_NAME.match(name)
        if not match:
            continue
        base, num, ext = match.group("base", "num", "ext")
        if num is None and ext is None:
            plain.setdefault(base, _unquote(raw_value))
        else:
            segments = extended.setdefault(base, {})
            segments.setdefault(int(num or 0), (_unquote(raw_value), bool(ext)))
    result = {name: decode_header(text) for name, text in plain.items()}
    for name, segments in extended.items():
        charset = None
        data = bytearray()
        for index, number in enumerate(sorted(segments)):
            text, is_encoded = segments[number]
            raw = _to_bytes(text)
            if is_encoded:
                if index == 0 and raw.count(b"'") >= 2:
                    label, _, raw = raw.split(b"'", 2)
                    charset = label.decode("ascii", "replace") or None
                raw = _percent_decode(raw)
            data += raw
        # RFC 2231 wins over the plain fallback that clients send alongside it.
        result[name] = decode_bytes(bytes(data), charset)
    return result


_PERCENT = re.compile(rb"%([0-9A-Fa-f]{2})")


def _percent_decode(data: bytes) -> bytes:
    return _PERCENT.sub(lambda m: bytes([int(m.group(1), 16)]), data)


# --- Message-IDs and dates ----------------------------------------------------------

_ANGLE_ID = re.compile(r"<([^<>]*)>")


def _clean_msg_id(core: str) -> str:
    core = _raw_to_text("".join(core.split())).strip("<>")
    if (
        not core
        or "<" in core
        or ">" in core
        or len(core) > MAX_MESSAGE_ID_LENGTH
        or not core.isprintable()
    ):
        return ""
    return f"<{core}>"


def _msg_ids(value: str | None, *, bare_needs_at: bool = True) -> list[str]:
    if not value:
        return []
    text = _unfold(value)
    candidates = _ANGLE_ID.findall(text)
    if not candidates:
        # Broken clients omit the brackets; only keep tokens that look like ids.
        tokens = [token.strip(",;") for token in text.split()]
        candidates = [t for t in tokens if t and ("@" in t or not bare_needs_at)]
    return [ident for ident in map(_clean_msg_id, candidates) if ident]


def _parse_date(value: str | None) -> datetime | None:
    if not value:
        return None
    text = " ".join(_raw_to_text(value).split())
    try:
        parts = parsedate_tz(text)
    except Exception:
        parts = None
    if parts:
        year, month, day, hour, minute, second = parts[:6]
        offset = parts[9] or 0
        try:
            moment = datetime(year, month, day, hour, minute, min(second, 59), tzinfo=UTC)
            # Offsets beyond a day are typos; the local time is the better guess.
            if abs(offset) <= 86400:
                moment -= timedelta(seconds=offset)
            return moment
        except (ValueError, OverflowError):
            pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except (ValueError, OverflowError):
        return None
