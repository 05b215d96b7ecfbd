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

TRACE_HEADERS = (
    "received",
    "x-received",
    "return-path",
    "delivered-to",
    "x-original-to",
    "envelope-to",
    "received-spf",
    "authentication-results",
    "x-original-authentication-results",
    "dkim-signature",
    "x-gmail-labels",
    "status",
    "x-status",
    "x-keywords",
    "x-uid",
)
TRACE_PREFIXES = (
    "arc-",
    "x-envelope-",
    "x-gm-",
    "x-google-",
    "x-ms-exchange-",
    "x-microsoft-antispam",
    "x-forefront-",
    "x-spam-",
    "x-virus-",
    "x-mozilla-",
)
# The whole header block is canonicalised by two regular expressions (a pass of C
# each; a loop over the fields in Python cost 10% of parse_message, these ~1%): line
# endings to LF, unfolded (RFC 5322 2.2.3: the line break before whitespace goes),
# trace fields removed. The lookahead on the first letter of the trace names spares
# the other lines the alternation.
_FOLD = re.compile(rb"\n(?=[ \t])")
_TRACE_FIELD = re.compile(
    rb"(?im)^(?=["
    + "".join(sorted({name[0] for name in TRACE_HEADERS + TRACE_PREFIXES})).encode()
    + rb"])(?:"
    + b"|".join(re.escape(name.encode()) for name in TRACE_HEADERS)
    + rb"|(?:"
    + b"|".join(re.escape(prefix.encode()) for prefix in TRACE_PREFIXES)
    + rb")[^:\n]*)[ \t]*:[^\n]*(?:\n|\Z)"
)


def _canonical_body(body: bytes) -> bytes:
    # Providers disagree on line endings and on the final newline.
    return body.replace(b"\r\n", b"\n").rstrip(b"\r\n \t")


def body_digest(body: bytes) -> bytes:
    return hashlib.sha256(_canonical_body(body)).digest()


def is_trace_header(name: str) -> bool:
    return bool(_TRACE_FIELD.match(name.strip().encode("ascii", "replace") + b":"))


def sender_headers(header_block: bytes) -> bytes:
    """The header block as the sender wrote it: unfolded, one field a line (LF), the
    trace fields and the mbox ``From `` separator left out. Lines that are no header
    field (a header-less message's first lines) stay as they are."""
    block = header_block.replace(b"\r\n", b"\n")
    if b"\r" in block:
        block = block.replace(b"\r", b"\n")
    if block.startswith(b"From "):
        # The mbox separator: the exporting mailbox's, not the sender's.
        block = block.partition(b"\n")[2]
    return _TRACE_FIELD.sub(b"", _FOLD.sub(b"", block)).rstrip(b"\n")


def dedupe_key(header_block: bytes, body_hash: bytes) -> str:
    """The v2 key: every header field the sender wrote (in order) and the body."""
    headers = sender_headers(header_block)
    digest = hashlib.sha256(_V2_SALT)
    # Length prefixed: the headers and the body hash cannot run into each other.
    digest.update(len(headers).to_bytes(8, "big"))
    digest.update(headers)
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
