"""Parse one raw RFC 5322 message, once, into what Postkamer stores.

Pure Python: no Django, no I/O. ``parse_message`` never raises for any input
bytes; when something is wrong it still returns a best-effort result and says
what in ``ParsedMessage.error``.

Policy choice
-------------
The MIME *structure* is parsed by the stdlib ``email`` feed parser with
``policy.compat32``; every header and parameter the product needs is decoded by
the small decoders below, from the raw bytes the parser keeps
(``Message.raw_items()``). Why not ``policy.default`` (as DESIGN.md section 3
first assumed):

* speed: ``default`` builds a header object for every header it touches,
  including each Content-Type the parser itself reads. Measured with timeit
  (best of 5) on a generated corpus of 400 typical messages
  (multipart/alternative, quoted-printable text + HTML, ~7 KB, 17 headers
  incl. Received and DKIM), Python 3.11.7 on the dev box:

  - ``default``: parse + subject/from/to/cc/date/ids + both bodies
    (``get_body().get_content()``): 1.53 ms/message
  - ``compat32``: parse + raw headers + every leaf payload decoded: 0.11 ms/message
  - ``parse_message`` (compat32 + the decoding, address parsing, nh3
    sanitising, text derivation and dedupe key here): 0.34 ms/message

* correctness: ``default`` turns undeclared latin-1 header bytes into U+FFFD,
  keeps windows-1252 bytes labelled iso-8859-1 as C1 control characters, and
  its ``get_content()`` raises LookupError for an unknown body charset. The
  decoders here decode those, map mislabelled charsets the way browsers do
  (iso-8859-1/us-ascii -> windows-1252, gb2312 -> gb18030, ...), prefer valid
  UTF-8 over a wrong label, and fall back to replacement characters instead of
  raising.
* the stdlib still has sharp edges (e.g. ``boundary*=...; boundary*0=...``
  makes ``decode_params`` raise TypeError inside the parser; 1,000 nested
  multiparts hit RecursionError): parameters the product reads are parsed
  here, the parser's own parameter lookups are made failure-tolerant, and
  anything else that escapes ends in a best-effort fallback.

``error`` is set only when content may be missing or garbled (no header
fields, a multipart whose boundary never appears, invalid base64, nesting or
part limits, a part that could not be serialised, an internal failure). Benign
defects that lose nothing (missing closing boundary, base64 padding) are
repaired silently.
"""

from __future__ import annotations

import binascii
import codecs
import functools
import hashlib
import html
import io
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import errors as email_errors
from email.generator import BytesGenerator
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32
from email.utils import parsedate_tz
from typing import Any

import nh3

__all__ = [
    "Address",
    "ParsedAttachment",
    "ParsedMessage",
    "compute_dedupe_key",
    "decode_bytes",
    "decode_header",
    "html_to_text",
    "parse_addresses",
    "parse_message",
    "parse_params",
    "sanitise_html",
]

# Deeper than any real mail; the walk below is iterative, so this only bounds
# the work a hostile message can cause.
MAX_MIME_DEPTH = 100
MAX_PARTS = 5000
MAX_REFERENCES = 50
# Longer "Message-IDs" are junk and would not fit an index anyway.
MAX_MESSAGE_ID_LENGTH = 500
MAX_FILENAME_LENGTH = 200
_DEDUPE_VERSION = b"postkamer-dedupe-v1"

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
)


# --- Public data --------------------------------------------------------------------


@dataclass(frozen=True)
class Address:
    name: str
    address: str


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


# --- Charsets -----------------------------------------------------------------------

# Labels Python does not know, mapped to ones it does.
_CHARSET_ALIASES = {
    "windows-874": "cp874",
    "latin-9": "iso8859-15",
    "utf8mb4": "utf-8",
    "x-user-defined": "latin-1",
    "ks_c_5601": "cp949",
}


def _canonical_codec(name: str) -> str:
    return codecs.lookup(name).name


# Labels that mail clients use for a superset in practice; the same mapping the
# WHATWG encoding standard applies in browsers.
_CHARSET_UPGRADES = {
    _canonical_codec(label): _canonical_codec(target)
    for label, target in (
        ("ascii", "cp1252"),
        ("iso-8859-1", "cp1252"),
        ("iso-8859-9", "cp1254"),
        ("iso-8859-11", "cp874"),
        ("tis-620", "cp874"),
        ("gb2312", "gb18030"),
        ("gbk", "gb18030"),
        ("shift_jis", "cp932"),
        ("euc_kr", "cp949"),
        ("big5", "big5hkscs"),
    )
}
# Text codecs that would misread mail rather than decode it.
_REFUSED_CODECS = frozenset(
    _canonical_codec(name)
    for name in ("unicode_escape", "raw_unicode_escape", "idna", "punycode", "undefined")
)
# Charsets where ASCII bytes do not mean ASCII text, so no shortcut applies.
_NOT_ASCII_COMPATIBLE = ("utf-7", "utf-16", "utf-32", "iso2022", "hz")
_CP1252 = _canonical_codec("cp1252")
_UTF8 = _canonical_codec("utf-8")
# windows-1252 with its five undefined bytes passed through as latin-1, as
# browsers do, so the decode can never fail.
_CP1252_TABLE = {
    byte: bytes([byte]).decode("cp1252")
    for byte in range(0x80, 0xA0)
    if byte not in (0x81, 0x8D, 0x8F, 0x90, 0x9D)
}
_UTF8_MULTIBYTE = re.compile(rb"[\xc2-\xf4][\x80-\xbf]")
_SURROGATES = re.compile("[\ud800-\udfff]")


@functools.lru_cache(maxsize=256)
def _resolve_charset(label: str | None) -> str | None:
    """The codec to use for a declared charset, or None to guess."""
    if not label:
        return None
    key = label.strip().strip("\"'").strip().lower()
    key = _CHARSET_ALIASES.get(key, key)
    candidates = [key]
    if key.startswith("x-"):
        candidates.append(key[2:])
    for candidate in candidates:
        info = _lookup_codec(candidate)
        if info is None:
            continue
        if not getattr(info, "_is_text_encoding", True) or info.name in _REFUSED_CODECS:
            return None
        return _CHARSET_UPGRADES.get(info.name, info.name)
    return None


def _lookup_codec(name: str) -> codecs.CodecInfo | None:
    try:
        return codecs.lookup(name)
    except Exception:  # LookupError, or odd names the registry chokes on
        return None


def _scrub(text: str) -> str:
    # PostgreSQL text rejects NUL, and lone surrogates (utf-7, utf-16 junk)
    # cannot be encoded for storage or handed to nh3.
    if "\x00" in text:
        text = text.replace("\x00", "")
    if not text.isascii() and _SURROGATES.search(text):
        text = _SURROGATES.sub("\ufffd", text)
    return text


def _decode_cp1252(data: bytes) -> str:
    return data.decode("latin-1").translate(_CP1252_TABLE)


def decode_bytes(data: bytes, charset: str | None = None) -> str:
    """Decode text in a declared (possibly wrong or unknown) charset; never raises."""
    if not data:
        return ""
    codec = _resolve_charset(charset)
    if codec is None or not codec.startswith(_NOT_ASCII_COMPATIBLE):
        if data.isascii():
            return _scrub(data.decode("ascii"))
        # Text that is valid UTF-8 and not ASCII is almost never anything else,
        # whatever its label says; mislabelled UTF-8 is common.
        try:
            return _scrub(data.decode("utf-8"))
        except UnicodeDecodeError:
            pass
        if codec == _UTF8:
            if _UTF8_MULTIBYTE.search(data):
                return _scrub(data.decode("utf-8", "replace"))
            # Not a single UTF-8 sequence: latin text labelled utf-8.
            return _scrub(_decode_cp1252(data))
        if codec is None or codec == _CP1252:
            return _scrub(_decode_cp1252(data))
    try:
        return _scrub(data.decode(codec))
    except Exception:  # UnicodeDecodeError, or a codec that rejects the input outright
        return _decode_replacing(data, codec)


def _decode_replacing(data: bytes, codec: str) -> str:
    try:
        return _scrub(data.decode(codec, "replace"))
    except Exception:  # a codec that fails even with "replace"
        return _scrub(data.decode("utf-8", "replace"))


def _to_bytes(value: str) -> bytes:
    # The parser decodes header bytes as ASCII with surrogateescape; this
    # recovers them exactly.
    return value.encode("utf-8", "surrogateescape")


def _raw_to_text(value: str) -> str:
    if value.isascii():
        return _scrub(value)
    return decode_bytes(_to_bytes(value))


# --- Header decoding ----------------------------------------------------------------

# RFC 2047 encoded-word, with an optional RFC 2231 language ("utf-8*en").
_ENCODED_WORD = re.compile(r"=\?([^?\s*]+)(?:\*[^?\s]*)?\?([bBqQ])\?([^?\s]*)\?=")
_B64_JUNK = re.compile(rb"[^A-Za-z0-9+/]")
_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
_CONTROL_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _b64decode(data: bytes) -> tuple[bytes, bool]:
    """Lenient base64: (decoded bytes, whether the input was clean)."""
    clean = not data.translate(None, _B64_ALPHABET + b" \t\r\n")
    padding = data.find(b"=")
    if padding == -1 or not data[padding:].strip(b"= \t\r\n"):
        try:
            return binascii.a2b_base64(data), clean
        except binascii.Error:
            pass  # missing padding or a truncated tail
    # Also reached for separately padded chunks glued together, which
    # a2b_base64 would silently cut at the first padding.
    out = []
    for chunk in data.split(b"="):
        chunk = _B64_JUNK.sub(b"", chunk)
        if len(chunk) % 4 == 1:
            chunk = chunk[:-1]
            clean = False
        if chunk:
            out.append(binascii.a2b_base64(chunk + b"=" * (-len(chunk) % 4)))
    return b"".join(out), clean


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


# --- Addresses ----------------------------------------------------------------------


def _split_address_list(text: str) -> list[str]:
    """Mailbox strings at top level; group names ("team: a, b;") are dropped."""
    items: list[str] = []
    current: list[str] = []
    in_quote = escaped = False
    comment_depth = 0
    in_angle = in_bracket = False
    index = 0
    while index < len(text):
        char = text[index]
        if in_quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_quote = False
        elif comment_depth:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == "(":
                comment_depth += 1
            elif char == ")":
                comment_depth -= 1
        elif char == "=" and text.startswith("=?", index):
            # Sloppy encoders leave "," or ":" inside encoded-words.
            match = _ENCODED_WORD.match(text, index)
            if match:
                current.append(match.group())
                index = match.end()
                continue
        elif char == '"':
            in_quote = True
        elif char == "(":
            comment_depth = 1
        elif char == "<":
            in_angle = True
        elif char == ">":
            in_angle = False
        elif char == "[":
            in_bracket = True
        elif char == "]":
            in_bracket = False
        elif not in_angle and not in_bracket and char in ",;":
            items.append("".join(current))
            current = []
            index += 1
            continue
        elif not in_angle and not in_bracket and char == ":":
            current = []
            index += 1
            continue
        current.append(char)
        index += 1
    items.append("".join(current))
    return [item for item in items if item.strip()]


_COMMENT = re.compile(r"\((?:[^()\\]|\\.)*\)")


def _strip_comments(text: str) -> tuple[str, list[str]]:
    comments: list[str] = []
    # Nested comments are rare; peeling innermost first handles them anyway.
    for _ in range(10):
        found = _COMMENT.findall(text)
        if not found:
            break
        comments.extend(found)
        text = _COMMENT.sub(" ", text)
    return text, [comment[1:-1] for comment in comments]


def _top_level_angle(text: str) -> int:
    in_quote = escaped = False
    for index, char in enumerate(text):
        if in_quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_quote = False
        elif char == '"':
            in_quote = True
        elif char == "<":
            return index
    return -1


def _display_name(raw: str) -> str:
    raw = raw.strip()
    if raw.startswith('"') and raw.endswith('"') and len(raw) > 1:
        raw = raw[1:-1]
    raw = re.sub(r'\\(.)|"', lambda m: m.group(1) or "", raw)
    name = _header_text(raw)
    # Encoded-words sometimes carry their own quotes.
    return name.strip('"').strip()


def _parse_mailbox(item: str) -> Address | None:
    angle = _top_level_angle(item)
    if angle >= 0:
        end = item.find(">", angle)
        address = item[angle + 1 : end if end >= 0 else len(item)]
        if address.startswith("@") and ":" in address:
            address = address.rsplit(":", 1)[1]  # obsolete source route
        # Parentheses before the angle stay: clients show them as part of the name.
        name = _display_name(item[:angle])
    else:
        address, comments = _strip_comments(item)
        name = _display_name(comments[0]) if comments else ""
        tokens = address.split()
        with_at = [token for token in tokens if "@" in token]
        if len(tokens) > 1 and with_at:
            # "John Smith john@x" without brackets: the token with "@" is the address.
            address = with_at[-1]
            name = name or _display_name(" ".join(t for t in tokens if t is not address))
    address = _raw_to_text("".join(address.split())).strip("<>")
    if not address:
        return None
    return Address(name=name, address=address)


def parse_addresses(values: list[str]) -> list[Address]:
    addresses: list[Address] = []
    for value in values:
        for item in _split_address_list(_unfold(value)):
            mailbox = _parse_mailbox(item)
            if mailbox is not None:
                addresses.append(mailbox)
    return addresses


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


# --- HTML ---------------------------------------------------------------------------

_ALLOWED_TAGS = {
    "a", "abbr", "b", "big", "blockquote", "br", "caption", "center", "cite", "code",
    "col", "colgroup", "dd", "del", "div", "dl", "dt", "em", "font", "h1", "h2", "h3",
    "h4", "h5", "h6", "hr", "i", "img", "ins", "kbd", "li", "mark", "ol", "p", "pre",
    "q", "s", "samp", "small", "span", "strike", "strong", "sub", "sup", "table",
    "tbody", "td", "tfoot", "th", "thead", "tr", "tt", "u", "ul", "var", "wbr",
}  # fmt: skip
# Dropped together with everything inside them (their text is not mail content).
_DROPPED_WITH_CONTENT = {
    "script", "style", "title", "template", "noscript", "noembed", "noframes",
    "iframe", "frameset", "object", "applet", "svg", "math", "textarea", "select", "xmp",
}  # fmt: skip
_TABLE_ATTRS = {"width", "height", "bgcolor", "valign", "border", "cellpadding", "cellspacing"}
_ALLOWED_ATTRIBUTES = {
    "*": {"style", "title", "dir", "lang", "align"},
    "a": {"href"},
    "img": {"src", "alt", "width", "height", "border"},
    "font": {"color", "face", "size"},
    "table": _TABLE_ATTRS,
    "td": _TABLE_ATTRS | {"colspan", "rowspan", "nowrap"},
    "th": _TABLE_ATTRS | {"colspan", "rowspan", "nowrap"},
    "tr": {"bgcolor", "valign", "height"},
    "tbody": {"valign"},
    "thead": {"valign"},
    "tfoot": {"valign"},
    "col": {"span", "width"},
    "colgroup": {"span", "width"},
    "ol": {"start", "type"},
    "ul": {"type"},
    "li": {"value"},
    "hr": {"width", "size"},
}
# cid: is how inline images are referenced; data: is left out on purpose.
_URL_SCHEMES = {"http", "https", "mailto", "tel", "cid"}
# Layout and typography only: nothing that can load a URL (background,
# list-style-image, content) or position over the app (position, z-index).
_STYLE_PROPERTIES = {
    "background-color", "border", "border-bottom", "border-collapse", "border-color",
    "border-left", "border-radius", "border-right", "border-spacing", "border-style",
    "border-top", "border-width", "color", "direction", "display", "font-family",
    "font-size", "font-style", "font-variant", "font-weight", "height", "letter-spacing",
    "line-height", "list-style-type", "margin", "margin-bottom", "margin-left",
    "margin-right", "margin-top", "max-height", "max-width", "min-height", "min-width",
    "padding", "padding-bottom", "padding-left", "padding-right", "padding-top",
    "table-layout", "text-align", "text-decoration", "text-indent", "text-transform",
    "vertical-align", "white-space", "width", "word-break", "word-spacing",
}  # fmt: skip
_CSS_FUNCTION = re.compile(r"([^\s:,(]*)\s*\(")
_CSS_SAFE_FUNCTIONS = {"rgb", "rgba", "hsl", "hsla"}
_CSS_FORBIDDEN = ("\\", "/*", "*/", "<", ">", "@", "&", "url", "expression", "script")
# The same tokens in one pass (this runs for every declaration of every style attribute).
_CSS_FORBIDDEN_ANY = re.compile("|".join(re.escape(token) for token in _CSS_FORBIDDEN))


def _safe_declaration(declaration: str) -> bool:
    lowered = declaration.lower()
    if _CSS_FORBIDDEN_ANY.search(lowered):
        return False
    if "(" not in lowered:
        return True
    return all(name in _CSS_SAFE_FUNCTIONS for name in _CSS_FUNCTION.findall(lowered))


# A style attribute in nh3's output: nh3 writes every attribute value in double
# quotes with '"', '<' and '>' escaped, so a value never holds a raw '"' and a tag
# never a raw '>'.
_STYLED_TAG = re.compile(r"<[a-zA-Z][^>]*\sstyle=\"[^>]*>")
_STYLE_ATTRIBUTE = re.compile(r"\sstyle=\"([^\"]*)\"")


def _filter_style(match: re.Match) -> str:
    # nh3 only filters style property *names*; values such as expression(),
    # url() or escape-obfuscated variants are removed here, per declaration, on
    # the CSS as nh3 wrote it (escapes decoded, comments gone): what the browser reads.
    value = html.unescape(match.group(1))
    kept = [d.strip() for d in value.split(";") if d.strip() and _safe_declaration(d)]
    if not kept:
        return ""
    return f' style="{html.escape(";".join(kept), quote=True)}"'


def _filter_styles(tag: re.Match) -> str:
    return _STYLE_ATTRIBUTE.sub(_filter_style, tag.group(0))


def sanitise_html(markup: str) -> str:
    # No attribute_filter callback: nh3 gives up the GIL while it works, and a
    # Python callback per attribute made it take the GIL back for each one (with
    # another busy thread in the process, 2.4 ms per newsletter instead of 0.4).
    # The style values are filtered in one pass over the output instead.
    clean = nh3.clean(
        markup,
        tags=_ALLOWED_TAGS,
        clean_content_tags=_DROPPED_WITH_CONTENT,
        attributes=_ALLOWED_ATTRIBUTES,
        url_schemes=_URL_SCHEMES,
        filter_style_properties=_STYLE_PROPERTIES,
        # Relative URLs would resolve against the app's own origin.
        url_relative="deny",
        strip_comments=True,
        link_rel="noopener noreferrer",
    )
    if "style=" not in clean:
        return clean
    return _STYLED_TAG.sub(_filter_styles, clean)


_REMOTE_IMAGE = re.compile(r"""<img\b[^>]*\ssrc="https?:""", re.IGNORECASE)
_BLOCK_TAG = re.compile(
    r"<(?:br|hr|/?(?:p|div|tr|li|h[1-6]|blockquote|pre|table|ul|ol|dl|dt|dd|center|caption"
    r"|thead|tbody|tfoot))\b[^>]*>",
    re.IGNORECASE,
)
_CELL_END = re.compile(r"</t[dh]>", re.IGNORECASE)
# Safe on nh3 output, which escapes "<" and ">" inside attribute values.
_ANY_TAG = re.compile(r"<[^>]*>")
_META_CHARSET = re.compile(rb"""<meta[^>]{0,200}?charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.I)


def html_to_text(clean_html: str) -> str:
    """Searchable text from sanitised HTML: no tags, entities decoded, whitespace collapsed."""
    text = _BLOCK_TAG.sub("\n", clean_html)
    text = _CELL_END.sub(" ", text)
    text = html.unescape(_ANY_TAG.sub("", text))
    lines: list[str] = []
    for line in text.split("\n"):
        line = " ".join(line.split())
        if line or (lines and lines[-1]):
            lines.append(line)
    return "\n".join(lines).strip()


# --- Plain text ---------------------------------------------------------------------


def _normalise_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _unflow(text: str, delsp: bool) -> str:
    """Undo RFC 3676 format=flowed soft line breaks."""
    out: list[str] = []
    paragraph: list[str] = []
    paragraph_depth = 0

    def finish() -> None:
        if paragraph:
            prefix = ">" * paragraph_depth + (" " if paragraph_depth else "")
            out.append(prefix + "".join(paragraph))
            paragraph.clear()

    for line in text.split("\n"):
        depth = len(line) - len(line.lstrip(">"))
        content = line[depth:]
        if content.startswith(" "):
            content = content[1:]  # space-stuffing
        if paragraph and depth != paragraph_depth:
            finish()
        paragraph_depth = depth
        flowed = content.endswith(" ") and content != "-- "
        if flowed and delsp:
            content = content[:-1]
        paragraph.append(content)
        if not flowed:
            finish()
    finish()
    return "\n".join(out)


# --- MIME ---------------------------------------------------------------------------


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


_PARSER = BytesParser(_class=_TolerantMessage, policy=compat32)
_HEADER_LINE = re.compile(rb"[\x21-\x39\x3b-\x7e]+:")
_HEADER_LINE_SPACED = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]+:")
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


def _raw_headers(part: Message) -> dict[str, list[str]]:
    headers: dict[str, list[str]] = {}
    for name, value in part.raw_items():
        if isinstance(value, str):
            headers.setdefault(name.strip().lower(), []).append(value)
    return headers


def _first(headers: dict[str, list[str]], name: str) -> str | None:
    values = headers.get(name)
    return values[0] if values else None


def _transfer_decode(part: Message, cte_header: str | None, problems: list[str]) -> bytes:
    # Read the stored payload directly: get_payload(decode=False) lossily
    # decodes 8-bit data, and get_payload(decode=True) ignores a
    # Content-Transfer-Encoding with stray whitespace or quotes.
    payload = part._payload
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


def _body_text(data: bytes, params: dict[str, str], subtype: str) -> str:
    charset = params.get("charset")
    if subtype == "html" and not charset:
        match = _META_CHARSET.search(data[:4096])
        if match:
            charset = match.group(1).decode("ascii", "replace")
    text = _normalise_newlines(decode_bytes(data, charset))
    if subtype == "plain" and params.get("format", "").lower() == "flowed":
        text = _unflow(text, params.get("delsp", "").lower() == "yes")
    return text


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
    if isinstance(part._payload, list):
        if maintype == "multipart":
            stack.extend((child, depth + 1) for child in reversed(part._payload))
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
    content_id = _fold_whitespace(_raw_to_text(_first(headers, "content-id") or ""))
    content_id = content_id.strip("<>").strip() or None
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


def _disposition(header: str | None) -> str | None:
    if header is None:
        return None
    return _unfold(header).split(";", 1)[0].strip().lower() or None


def _unnamed(collected: _Collected, content_type: str) -> str:
    return f"unnamed-{len(collected.attachments) + 1}" + _EXTENSIONS.get(content_type, ".bin")


def _collect_message_part(part: Message, content_type: str, collected: _Collected) -> None:
    """message/rfc822 and friends become one attachment holding the inner message."""
    headers = _raw_headers(part)
    inner = part._payload
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


# --- Entry point --------------------------------------------------------------------


def _canonical_body(body: bytes) -> bytes:
    # Providers disagree on line endings and on the final newline.
    return body.replace(b"\r\n", b"\n").rstrip(b"\r\n \t")


def _body_digest(body: bytes) -> str:
    return hashlib.sha256(_canonical_body(body)).hexdigest()


def compute_dedupe_key(
    message_id: str,
    from_address: str,
    raw_date: str,
    subject: str,
    body: bytes,
    *,
    body_digest: str | None = None,
) -> str:
    """``body_digest``: ``_body_digest(body)`` taken before, when ``body`` was let go."""
    if body_digest is None:
        body_digest = _body_digest(body)
    digest = hashlib.sha256(_DEDUPE_VERSION)
    for value in (message_id, from_address.lower(), raw_date, subject, body_digest):
        # Length prefixes keep ("ab", "c") and ("a", "bc") apart.
        data = _to_bytes(value)
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()


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
        body = _split_raw(raw)[1]
    except Exception:
        body = raw
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
        dedupe_key=compute_dedupe_key("", "", "", "", body),
        error=error,
        has_remote_images=False,
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
    body_digest = _body_digest(body)
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

    if too_deep:
        collected = _Collected(problems=["MIME structure nested too deeply to parse; body skipped"])
    else:
        # Attached messages are written back with the line endings they came with.
        collected = _walk(root, "\r\n" if b"\r\n" in header_block else "\n")
    problems.extend(collected.problems)
    html_body = "\n".join(
        sanitise_html(markup) for markup in collected.htmls if markup.strip()
    ).strip()
    texts = [text for text in collected.texts if text.strip()]
    text = "\n\n".join(texts) if texts else html_to_text(html_body)

    return ParsedMessage(
        message_id=message_id,
        in_reply_to=reply_ids[0] if reply_ids else "",
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
        dedupe_key=compute_dedupe_key(
            message_id,
            senders[0].address if senders else "",
            raw_date,
            subject,
            b"",
            body_digest=body_digest,
        ),
        error="; ".join(dict.fromkeys(problems)),
        has_remote_images=bool(_REMOTE_IMAGE.search(html_body)),
    )
