"""The dedupe key: copies of one email get one key, different emails different keys.

Version 2 (``v2`` + 62 hex digits, what is stored from now on) hashes every header
field the sender wrote, in order, and the body. Version 1 (64 hex digits, stored
before) hashed only Message-ID, sender, raw Date, Subject and the body, so messages
without those headers, or differing only in their MIME headers, merged. Rows keep
the key they were stored under; every lookup matches a message's v2 key or its v1
key (``ParsedMessage.dedupe_keys``), so nothing is imported twice and no re-import
is needed. The prefix keeps the versions apart (``v`` is not a hex digit).

Trace headers: what the receiving side adds to each delivered copy, so two copies of
one email (one to sales@, one to support@) differ in them and in nothing else. None of
them carries content the sender wrote, so leaving them out can never merge two
different emails: whatever else differs still separates them.

* RFC 5321 4.4 trace fields and their relatives: ``Received``, ``Return-Path``,
  ``Delivered-To``, ``X-Original-To``, ``Envelope-To``, ``X-Envelope-*``,
  ``Received-SPF``.
* Authentication results (RFC 8601) and ARC (RFC 8617): each receiver (and each
  forwarder) adds its own.
* ``DKIM-Signature``: a signature over other headers and the body, no content of its
  own. Usually the sending side's and equal in every copy, but a forwarding or
  list-expanding hop on the way to one of the addresses adds its own, with its own
  timestamp; anything it signs is hashed anyway.
* Per-mailbox and filtering headers that providers and servers add on delivery or
  export: Gmail's ``X-Gmail-Labels``/``X-GM-*``/``X-Google-*``/``X-Received``,
  Exchange's ``X-MS-Exchange-*``, ``X-Microsoft-Antispam*``, ``X-Forefront-*``,
  spam and virus scanners' ``X-Spam-*``/``X-Virus-*``, mbox and Mozilla status
  (``Status``, ``X-Status``, ``X-Keywords``, ``X-UID``, ``X-Mozilla-*``) and the mbox
  ``From `` separator line.

Pure Python: runs in the parse helper process as well.
"""

from __future__ import annotations

import hashlib
import re

from inboxes.mime.charsets import _to_bytes

_V1_SALT = b"postkamer-dedupe-v1"
_V2_SALT = b"postkamer-dedupe-v2"
V2_PREFIX = "v2"

TRACE_HEADERS = frozenset(
    {
        b"received",
        b"x-received",
        b"return-path",
        b"delivered-to",
        b"x-original-to",
        b"envelope-to",
        b"received-spf",
        b"authentication-results",
        b"x-original-authentication-results",
        b"dkim-signature",
        b"x-gmail-labels",
        b"status",
        b"x-status",
        b"x-keywords",
        b"x-uid",
        b"x-virus-scanned",
    }
)
TRACE_PREFIXES = (
    b"arc-",
    b"x-envelope-",
    b"x-gm-",
    b"x-google-",
    b"x-ms-exchange-",
    b"x-microsoft-antispam",
    b"x-forefront-",
    b"x-spam-",
    b"x-virus-",
    b"x-mozilla-",
)
_LINE = re.compile(rb"[^\r\n]*(?:\r\n|\r|\n|$)")


def _canonical_body(body: bytes) -> bytes:
    # Providers disagree on line endings and on the final newline.
    return body.replace(b"\r\n", b"\n").rstrip(b"\r\n \t")


def body_digest(body: bytes) -> bytes:
    return hashlib.sha256(_canonical_body(body)).digest()


def is_trace_header(name: bytes) -> bool:
    name = name.strip().lower()
    return name in TRACE_HEADERS or name.startswith(TRACE_PREFIXES)


def _sender_fields(header_block: bytes) -> list[bytes]:
    """The header block's fields, unfolded (RFC 5322 2.2.3), trace headers left out.
    Lines that are no header field (a header-less message's first lines) stay, as bytes."""
    fields: list[bytearray] = []
    for index, match in enumerate(_LINE.finditer(header_block)):
        line = match.group().rstrip(b"\r\n")
        if not line and match.end() == len(header_block):
            break
        if index == 0 and line.startswith(b"From "):
            continue  # the mbox separator: the exporting mailbox's, not the sender's
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line  # unfolding removes the line break only
        else:
            fields.append(bytearray(line))
    kept = []
    for field in fields:
        name, colon, value = bytes(field).partition(b":")
        if colon and is_trace_header(name):
            continue
        kept.append(name.strip().lower() + colon + value.strip(b" \t") if colon else bytes(field))
    return kept


def dedupe_key(header_block: bytes, body_hash: bytes) -> str:
    """The v2 key: every header field the sender wrote (in order) and the body."""
    digest = hashlib.sha256(_V2_SALT)
    for field in _sender_fields(header_block):
        # Length prefixes keep ("ab", "c") and ("a", "bc") apart.
        digest.update(len(field).to_bytes(8, "big"))
        digest.update(field)
    digest.update(b"\x00body")
    digest.update(body_hash)
    return V2_PREFIX + digest.hexdigest()[: 64 - len(V2_PREFIX)]


def legacy_dedupe_key(
    message_id: str,
    from_address: str,
    raw_date: str,
    subject: str,
    body: bytes,
    *,
    body_digest_hex: str | None = None,
) -> str:
    """The v1 key (stored before v2): Message-ID, sender, raw Date, Subject, body.
    ``body_digest_hex``: ``body_digest(body).hex()`` taken before, when ``body`` was let go."""
    if body_digest_hex is None:
        body_digest_hex = body_digest(body).hex()
    digest = hashlib.sha256(_V1_SALT)
    for value in (message_id, from_address.lower(), raw_date, subject, body_digest_hex):
        data = _to_bytes(value)
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()


def key_path_shard(key: str) -> str:
    """Two characters of the key that spread stored files over directories."""
    return key[len(V2_PREFIX) : len(V2_PREFIX) + 2] if key.startswith(V2_PREFIX) else key[:2]
