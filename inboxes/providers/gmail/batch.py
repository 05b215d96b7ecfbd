"""Gmail batch requests (``multipart/mixed``) without the email package.

google-api-python-client reads a batch answer whole, decodes it to text and runs
it through ``email.FeedParser`` (the whole answer, then each part again), then
JSON-decodes every part: four to six copies of each message alive at once, and
most of the allocations of a Gmail sync. Here the answer is read from the socket
in chunks and cut at its boundary as it comes (``BatchSplitter``): each part's
status line and headers are read by hand, its JSON body decoded and the part
dropped before the next one is read, so a batch holds one part at a time plus
the messages already handed on.

The request side (``batch_body``) writes the ``application/http`` parts as
the client library does: ``Content-ID: <N>``, answered as ``<response-N>``.
"""

from __future__ import annotations

import binascii
import http.client
import json
import re
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

CRLF = b"\r\n"
READ_CHUNK = 256 * 1024

_BOUNDARY = re.compile(r'boundary\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]+))', re.IGNORECASE)


class BatchFormatError(http.client.HTTPException):
    """The batch answer is not what was asked for: cut short, or not multipart.

    An ``HTTPException``, so it is handled as a broken connection: what arrived
    whole is kept, the rest is asked for again."""


@dataclass
class BatchPart:
    """One answer of a batch: its HTTP status, headers (lower-case names) and body."""

    content_id: str
    status: int
    reason: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


def boundary_of(content_type: str) -> bytes:
    """The multipart boundary of a ``Content-Type`` value, quoted or not."""
    if not content_type.lower().lstrip().startswith("multipart/"):
        raise BatchFormatError(f"the batch answer is not multipart ({content_type!r})")
    found = _BOUNDARY.search(content_type)
    if found is None:
        raise BatchFormatError(f"the batch answer has no boundary ({content_type!r})")
    quoted, bare = found.groups()
    value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare
    if not value or len(value) > 200:
        raise BatchFormatError(f"the batch answer's boundary is unusable ({content_type!r})")
    return value.encode("latin-1")


def _headers(block: bytes) -> dict[str, str]:
    """``Name: value`` lines (CRLF or LF; folded lines joined), names lower-cased."""
    found: dict[str, str] = {}
    last = ""
    for line in block.replace(CRLF, b"\n").split(b"\n"):
        if not line:
            continue
        if line[:1] in (b" ", b"\t") and last:
            found[last] += " " + line.strip().decode("latin-1")
            continue
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        last = name.strip().decode("latin-1").lower()
        found[last] = value.strip().decode("latin-1")
    return found


HEAD_MAX = 64 * 1024  # a part's MIME headers, status line and HTTP headers fit in this


def _blank_line(data: bytes, start: int = 0) -> tuple[int, int]:
    """Where the first empty line from ``start`` begins and ends (CRLF or LF), or (-1, -1)."""
    best = (-1, -1)
    for marker in (b"\r\n\r\n", b"\n\n", b"\n\r\n"):
        at = data.find(marker, start)
        if at >= 0 and (best[0] < 0 or at < best[0]):
            best = (at, at + len(marker))
    return best


def parse_part(content: bytes | memoryview) -> BatchPart:
    """One part of a batch answer: its MIME headers, then an HTTP response. Only
    the body is copied out of ``content``."""
    head = bytes(content[:HEAD_MAX])
    mime_end = _blank_line(head)
    if mime_end[0] < 0:
        raise BatchFormatError("a part of the batch answer has no headers")
    mime = _headers(head[: mime_end[0]])
    content_id = mime.get("content-id", "").strip().strip("<>").removeprefix("response-")
    http_end = _blank_line(head, mime_end[1])
    if http_end[0] < 0:
        if len(content) > HEAD_MAX:
            raise BatchFormatError("a part of the batch answer has no end to its headers")
        http_end = (len(head), len(head))  # an answer without a body
    status_line, _, rest = head[mime_end[1] : http_end[0]].partition(b"\n")
    words = status_line.strip().split(None, 2)
    if len(words) < 2 or not words[0].startswith(b"HTTP/") or not words[1].isdigit():
        raise BatchFormatError(f"a part of the batch answer has no status line ({status_line!r})")
    return BatchPart(
        content_id=content_id,
        status=int(words[1]),
        reason=words[2].decode("latin-1") if len(words) > 2 else "",
        headers=_headers(rest),
        body=bytes(content[http_end[1] :]),
    )


class BatchSplitter:
    """Cuts a ``multipart/mixed`` answer into its parts as its bytes come in.

    ``feed`` takes the next chunk and returns the parts it completed; ``close``
    says whether the closing delimiter came (``BatchFormatError`` if not). Only
    the part being read is kept: a part is cut off the buffer as soon as its
    delimiter is seen, and the search goes on from where the last one stopped,
    so a part of any size costs one pass."""

    def __init__(self, boundary: bytes) -> None:
        self._delimiter = b"--" + boundary
        self._buffer = bytearray()
        self._scanned = 0  # where the search for the next delimiter goes on
        self._started = False  # the first delimiter was seen (what came before: preamble)
        self.ended = False  # the closing delimiter was seen
        self.parts_seen = 0

    def feed(self, chunk: bytes) -> list[BatchPart]:
        if self.ended:
            return []  # the epilogue
        self._buffer += chunk
        parts: list[BatchPart] = []
        while True:
            found = self._next_delimiter()
            if found is None:
                return parts
            start, after, closing = found
            if self._started:
                with memoryview(self._buffer) as view:
                    parts.append(parse_part(view[:start]))
                self.parts_seen += 1
            self._started = True
            if closing:
                self.ended = True
                self._buffer = bytearray()
                return parts
            del self._buffer[:after]
            self._scanned = 0

    def _next_delimiter(self) -> tuple[int, int, bool] | None:
        """(where the part before it ends, where the next part begins, closing?) of
        the next delimiter line, or None until one is all in the buffer. The line
        break before a delimiter belongs to it, not to the part."""
        buffer, delimiter = self._buffer, self._delimiter
        position = self._scanned
        while True:
            at = buffer.find(delimiter, position)
            if at < 0:
                # The next delimiter may begin in the tail of this buffer.
                self._scanned = max(len(buffer) - len(delimiter) - 2, position)
                return None
            tail = at + len(delimiter)
            if at > 0 and buffer[at - 1] != 0x0A:
                position = at + 1  # not at a line start: part of the content
                continue
            if len(buffer) < tail + 2:
                self._scanned = at
                return None
            start = at - 2 if at >= 2 and buffer[at - 2 : at] == b"\r\n" else max(at - 1, 0)
            if buffer[tail : tail + 2] == b"--":
                return start, tail + 2, True
            line_end = buffer.find(b"\n", tail)
            if line_end < 0:
                self._scanned = at
                return None
            if buffer[tail:line_end].strip():
                position = at + 1  # a longer word that begins like the boundary
                continue
            return start, line_end + 1, False

    def close(self) -> None:
        if not self.ended:
            raise BatchFormatError(
                f"the batch answer ended early, after {self.parts_seen} complete parts"
            )


def batch_body(boundary: str, targets: Sequence[tuple[str, str]]) -> bytes:
    """A batch request of GETs: ``targets`` are (content id, path with query)."""
    chunks = []
    for content_id, target in targets:
        chunks.append(
            f"--{boundary}\r\nContent-Type: application/http\r\n"
            f"Content-Transfer-Encoding: binary\r\nContent-ID: <{content_id}>\r\n\r\n"
            f"GET {target} HTTP/1.1\r\n\r\n\r\n"
        )
    chunks.append(f"--{boundary}--\r\n")
    return "".join(chunks).encode("utf-8")


def response_chunks(response: http.client.HTTPResponse) -> Iterator[bytes]:
    """The body of ``response`` in chunks, gunzipped if it came compressed."""
    inflate = None
    if response.getheader("content-encoding", "").strip().lower() == "gzip":
        inflate = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    while True:
        chunk = response.read(READ_CHUNK)
        if not chunk:
            break
        if inflate is None:
            yield chunk
            continue
        # Bounded: a small gzip chunk may inflate a lot.
        data = inflate.decompress(chunk, READ_CHUNK)
        while data:
            yield data
            data = inflate.decompress(inflate.unconsumed_tail, READ_CHUNK)
    if inflate is not None:
        tail = inflate.flush()
        if tail:
            yield tail
        if not inflate.eof:
            raise BatchFormatError("the batch answer's gzip stream ended early")


def raw_message(body: bytes) -> tuple[bytes, int | None] | None:
    """The message bytes and internalDate (ms) of a ``messages.get(format=raw)``
    answer, or None when it carries no ``raw``.

    The ``raw`` value (base64url: no character that JSON escapes) is decoded
    straight from the answer's bytes and the rest goes to ``json`` without it,
    so a big message is not also held as the JSON decoder's text and string."""
    start, end = _raw_value(body)
    if start < 0:
        data = json.loads(body)
        encoded = data.pop("raw", None) if isinstance(data, dict) else None
        if not isinstance(encoded, str):
            return None
        padded = bytearray(encoded.encode("ascii"))
        del encoded
    else:
        data = json.loads(body[:start] + body[end:])  # the rest, with "raw": ""
        with memoryview(body) as view:
            padded = bytearray(view[start:end])
    if not isinstance(data, dict):
        raise ValueError("the answer is not a JSON object")
    padded += b"=" * (-len(padded) % 4)
    raw = binascii.a2b_base64(padded.translate(_URLSAFE))
    internal = data.get("internalDate")
    return raw, int(internal) if internal else None


_URLSAFE = bytes.maketrans(b"-_", b"+/")


def _raw_value(body: bytes) -> tuple[int, int]:
    """Where the text of the top-level ``"raw"`` string starts and ends, or (-1, -1).

    ``"raw"`` followed by a colon can only be a key: inside a JSON string every
    quote is escaped. A value with an escape in it goes the slow way."""
    position = 0
    while (at := body.find(b'"raw"', position)) >= 0:
        position = at + 5
        colon = position
        while body[colon : colon + 1] in (b" ", b"\t", b"\r", b"\n"):
            colon += 1
        if body[colon : colon + 1] != b":":
            continue
        quote = colon + 1
        while body[quote : quote + 1] in (b" ", b"\t", b"\r", b"\n"):
            quote += 1
        if body[quote : quote + 1] != b'"':
            return -1, -1
        end = body.find(b'"', quote + 1)
        if end < 0 or body.find(b"\\", quote + 1, end) >= 0:
            return -1, -1
        return quote + 1, end
    return -1, -1
