"""Parse one raw RFC 5322 message, once, into what Postkamer stores.

Pure Python: no Django, no I/O. ``parse_message`` never raises for any input
bytes; when something is wrong it still returns a best-effort result and says
what in ``ParsedMessage.error``.

Policy choice
-------------
The MIME *structure* is parsed by the stdlib ``email`` feed parser with
``policy.compat32``; every header and parameter the product needs is decoded by
the small decoders of this package, from the raw bytes the parser keeps
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

Modules
-------
``charsets`` (bytes to text: charsets, detection of undeclared or wrong ones,
lenient base64), ``headers`` (RFC 2047, undeclared 8-bit, RFC 2231 parameters,
Message-IDs, dates), ``addresses`` (address headers), ``html`` (nh3 sanitising,
remote images), ``text`` (text bodies, format=flowed, HTML to text), ``parts``
(walking the MIME parts, attachments), ``tnef`` (winmail.dat unpacked), ``dedupe``
(the dedupe keys, v2 and the v1 stored before) and ``message`` (``ParsedMessage``,
``parse_message``). They import each other's modules, never this package; other
code imports from here.
"""

from inboxes.mime.addresses import Address, parse_addresses
from inboxes.mime.charsets import decode_bytes
from inboxes.mime.dedupe import dedupe_key, legacy_dedupe_key
from inboxes.mime.headers import decode_header, parse_params
from inboxes.mime.html import sanitise_html
from inboxes.mime.message import ParsedMessage, parse_message, parsed_as_composed
from inboxes.mime.parts import ParsedAttachment
from inboxes.mime.text import html_to_text

__all__ = [
    "Address",
    "ParsedAttachment",
    "ParsedMessage",
    "dedupe_key",
    "decode_bytes",
    "decode_header",
    "html_to_text",
    "legacy_dedupe_key",
    "parse_addresses",
    "parse_message",
    "parsed_as_composed",
    "parse_params",
    "sanitise_html",
]
