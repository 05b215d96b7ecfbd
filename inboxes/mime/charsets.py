"""Bytes to text: declared (often wrong or unknown) charsets, lenient base64.

Never raises: mislabelled charsets are mapped the way browsers do, valid UTF-8
wins over a wrong label, 8-bit text with no label (or a Latin/ASCII/UTF-8 label it
does not read as) is decoded by detection (charset-normalizer) when windows-1252
makes a mess of it, and anything still undecodable becomes replacement characters.
"""

from __future__ import annotations

import binascii
import codecs
import functools
import re

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


# The charsets mail arrives in unlabelled or mislabelled, that detection may pick.
# (Left open, it reads short Cyrillic text as Shift_JIS and Latin text as UTF-16.)
DETECTABLE_CHARSETS = (
    "cp1252",
    "cp1250",
    "cp1251",
    "koi8_r",
    "koi8_u",
    "iso8859_2",
    "iso8859_5",
    "iso8859_7",
    "cp1253",
    "cp1254",
    "cp1255",
    "cp1256",
    "cp1257",
    "cp874",
    "cp932",
    "euc_jp",
    "gb18030",
    "big5",
    # EUC-KR, not its superset cp949: cp949's extra syllables take in Shift_JIS's
    # kana byte pairs, and Korean text rarely needs them.
    "euc_kr",
)
# charset-normalizer's "mess" of the text as first decoded, below which it is kept:
# Latin text read as windows-1252 measures 0 to 0.05, KOI8-R or Shift_JIS read so >1.
READS_AS_TEXT = 0.1
MESS_SAMPLE_CHARS = 8 * 1024
DETECTION_SAMPLE_BYTES = 64 * 1024
# Fewer 8-bit bytes than one per this many ASCII letters: Latin-script text.
LATIN_SHARE = 4
# Shorter text has too few letters to tell charsets apart (six KOI8-R letters read
# as well in Hebrew or Thai): it keeps the first reading.
DETECTION_MIN_BYTES = 32


_ASCII_LETTERS = bytes(range(ord("A"), ord("Z") + 1)) + bytes(range(ord("a"), ord("z") + 1))
_EIGHT_BIT = bytes(range(0x80, 0x100))


def _count(data: bytes, wanted: bytes) -> int:
    return len(data) - len(data.translate(None, wanted))


def _detected(data: bytes, first_reading: str, detect: bool = True) -> str:
    """``first_reading`` (``data`` in the declared or assumed charset) when it reads
    as text, else ``data`` in the charset charset-normalizer finds, when that reads
    better and decodes all of ``data``."""
    if not detect or len(data) < DETECTION_MIN_BYTES:
        return first_reading
    sample = data[:DETECTION_SAMPLE_BYTES]
    # Latin-script text: a few 8-bit letters among many ASCII ones (German, French,
    # Spanish: 2-5%). Text in other scripts is mostly 8-bit. The common case is
    # decided here without measuring.
    if _count(sample, _EIGHT_BIT) * LATIN_SHARE < _count(sample, _ASCII_LETTERS):
        return first_reading
    # Imported when first needed: most mail never is, and the parse helper stays small.
    from charset_normalizer import from_bytes
    from charset_normalizer.md import mess_ratio

    mess = mess_ratio(first_reading[:MESS_SAMPLE_CHARS], maximum_threshold=1.0)
    if mess < READS_AS_TEXT:
        return first_reading
    best = from_bytes(sample, cp_isolation=list(DETECTABLE_CHARSETS)).best()
    if best is None or best.chaos >= mess:
        return first_reading
    try:
        return _scrub(data.decode(best.encoding))
    except (UnicodeDecodeError, LookupError):
        return first_reading


def decode_bytes(data: bytes, charset: str | None = None, *, detect: bool = False) -> str:
    """Decode text in a declared (possibly wrong or unknown) charset; never raises.

    ``detect``: a body's text, long enough to detect a charset in when windows-1252
    (no label, or a Latin/ASCII/UTF-8 label the bytes are not) or the declared
    charset makes a mess of it. Not for header values and file names: short, and
    often doubly encoded, which detection would only turn into another mess."""
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
                # Mostly UTF-8 with a broken sequence, or another charset (Shift_JIS
                # bytes look like UTF-8 sequences) labelled utf-8.
                return _detected(data, _scrub(data.decode("utf-8", "replace")), detect)
            # Not a single UTF-8 sequence: latin (or other 8-bit) text labelled utf-8.
            return _detected(data, _scrub(_decode_cp1252(data)), detect)
        if codec is None or codec == _CP1252:
            return _detected(data, _scrub(_decode_cp1252(data)), detect)
    try:
        return _scrub(data.decode(codec))
    except Exception:  # UnicodeDecodeError, or a codec that rejects the input outright
        return _detected(data, _decode_replacing(data, codec), detect)


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


# --- Base64 -------------------------------------------------------------------------

_B64_JUNK = re.compile(rb"[^A-Za-z0-9+/]")
_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="


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
