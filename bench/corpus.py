"""A deterministic, realistic mail corpus for the benchmarks, and Maildir loading.

``message(i)`` returns the raw bytes of message number ``i``; it depends only on
``i`` and the seed, so a corpus of N messages is the first N of any larger one
and "100 new messages" are simply numbers N..N+99.

What the corpus holds (shares are per message, drawn from its own RNG):

* 30% text/plain (utf-8 8bit or quoted-printable, iso-8859-1, some format=flowed)
* 40% multipart/alternative (text + HTML with inline styles and tables)
* 6% HTML only (newsletters with remote images and tracking pixels)
* 16% multipart/mixed with 1-3 attachments (PDF, PNG, DOCX, CSV, ICS), some
  multipart/related with an inline cid: image
* 3% forwarded mail (message/rfc822), 2% auto-replies, 1% bounces
  (multipart/report)
* about 35% are replies in a thread (In-Reply-To, References up to 10 deep,
  "Re:"/"AW:" subjects, quoted text)
* about 40% have a non-ASCII From, To, Cc or Subject (RFC 2047 B and Q words in UTF-8 and
  latin-1, and some raw 8-bit UTF-8)
* about 1% are malformed: a boundary that never appears, an unterminated
  multipart, invalid base64, junk lines among the headers, an unknown charset,
  an impossible date, no Message-ID, undeclared latin-1 header bytes, a message
  cut off in the middle
* every message carries a realistic header block (Received chain,
  DKIM-Signature, ARC, Authentication-Results, List-Unsubscribe on newsletters)

The size distribution has a median of about 12 KB (headers 2-4 KB, lognormal
bodies, a heavy tail from attachments up to 1.5 MB). Everything is LF-only, as
a delivery agent writes Maildir files; Dovecot serves it as CRLF.
"""

from __future__ import annotations

import base64
import os
import quopri
import random
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

# The vocabulary, drawn from by index (the order matters).
from bench.corpus_words import ATTACHMENT_TYPES as _ATTACHMENT_TYPES
from bench.corpus_words import DOMAINS as _DOMAINS
from bench.corpus_words import FIRST as _FIRST
from bench.corpus_words import LAST as _LAST
from bench.corpus_words import REPLY_PREFIXES as _REPLY_PREFIXES
from bench.corpus_words import SUBJECTS as _SUBJECTS
from bench.corpus_words import WORDS as _WORDS

SEED = 20240611
TEAM_ADDRESS = "support@bench.example.com"
TEAM_NAME = "Bench Support"
START = datetime(2023, 1, 2, 8, 0, tzinfo=UTC)
MAX_REFERENCES = 10

# --- small helpers --------------------------------------------------------------------


def _rng(i: int, seed: int = SEED) -> random.Random:
    return random.Random(seed * 1_000_003 + i)


def _domain(i: int) -> str:
    return _DOMAINS[i % len(_DOMAINS)]


def message_id(i: int) -> str:
    return f"<{i}.{(i * 2654435761) % 2**32:08x}.bench@{_DOMAINS[i % 3]}>"


def _date(i: int) -> datetime:
    # Roughly 20 messages a day, in order, with jitter.
    return START + timedelta(minutes=72 * i + (i * 7919) % 50)


_ASCII_FIRST = [n for n in _FIRST if n.isascii()]
_ASCII_LAST = [n for n in _LAST if n.isascii()]


def _customer(rng: random.Random) -> tuple[str, str]:
    k = rng.randrange(3000)
    # About one sender in six has a non-ASCII name.
    firsts, lasts = (_FIRST, _LAST) if k % 6 == 0 else (_ASCII_FIRST, _ASCII_LAST)
    first = firsts[k % len(firsts)]
    last = lasts[(k // len(firsts)) % len(lasts)]
    local = f"{first}.{last}".lower().encode("ascii", "ignore").decode()
    local = "".join(c for c in local if c.isalnum() or c == ".").strip(".") or "customer"
    domain = _DOMAINS[k % len(_DOMAINS)]
    if not domain.isascii():
        domain = "customer.example.com"
    return f"{first} {last}", f"{local}{k}@{domain}"


def _words(rng: random.Random, count: int) -> str:
    return " ".join(rng.choices(_WORDS, k=count))


def _paragraphs(rng: random.Random, size: int) -> str:
    """About ``size`` characters of text in paragraphs of wrapped lines."""
    out: list[str] = []
    total = 0
    while total < size:
        para = _words(rng, rng.randint(20, 90))
        lines, line = [], []
        width = 0
        for word in para.split(" "):
            if width + len(word) > 72 and line:
                lines.append(" ".join(line))
                line, width = [], 0
            line.append(word)
            width += len(word) + 1
        if line:
            lines.append(" ".join(line))
        text = "\n".join(lines)
        out.append(text)
        total += len(text) + 2
    return "\n\n".join(out)


def _rfc2047(text: str, rng: random.Random) -> str:
    """Encode a header value the ways real clients do."""
    if text.isascii():
        return text
    style = rng.random()
    if style < 0.5:
        data = base64.b64encode(text.encode("utf-8")).decode()
        return f"=?UTF-8?B?{data}?="
    if style < 0.8:
        data = quopri.encodestring(text.encode("utf-8"), header=True).decode().replace("\n", "")
        return f"=?utf-8?q?{data}?="
    try:
        latin = text.encode("iso-8859-1")
    except UnicodeEncodeError:
        data = base64.b64encode(text.encode("utf-8")).decode()
        return f"=?utf-8?b?{data}?="
    data = quopri.encodestring(latin, header=True).decode().replace("\n", "")
    return f"=?ISO-8859-1?Q?{data}?="


def _address_header(name: str, address: str, rng: random.Random, raw8bit: bool) -> str:
    if name.isascii():
        quoted = f'"{name}"' if ("'" in name or "," in name) else name
        return f"{quoted} <{address}>"
    if raw8bit:
        return f'"{name}" <{address}>'
    return f"{_rfc2047(name, rng)} <{address}>"


def _parent(i: int) -> int | None:
    """The message ``i`` answers (about 35% are replies), or None."""
    rng = _rng(i, SEED + 1)
    if i > 0 and rng.random() < 0.35:
        return max(0, i - 1 - int(rng.expovariate(1 / 12)))
    return None


def _subject(i: int) -> str:
    rng = _rng(i, SEED + 2)
    return rng.choice(_SUBJECTS).format(n=10000 + rng.randrange(90000))


_ROOTS: dict[int, int] = {}


def _thread_info_iter(i: int) -> tuple[int | None, int, str]:
    """(parent index or None, root index, root subject) for message ``i``."""
    parent = _parent(i)
    chain = [i]
    j = parent
    while j is not None and j not in _ROOTS:
        chain.append(j)
        j = _parent(j)
    root = chain[-1] if j is None else _ROOTS[j]
    for k in chain:
        _ROOTS[k] = root
    return parent, root, _subject(root)


def _references(i: int) -> list[str]:
    refs: list[str] = []
    parent = _parent(i)
    while parent is not None and len(refs) < MAX_REFERENCES:
        refs.append(message_id(parent))
        parent = _parent(parent)
    return list(reversed(refs))


# --- bodies -----------------------------------------------------------------------------


def _body_size(rng: random.Random) -> int:
    # Median about 2.2 KB of text, a long tail.
    return int(min(60_000, max(120, rng.lognormvariate(7.7, 0.9))))


def _text_part(rng: random.Random, text: str) -> tuple[str, bytes]:
    """(headers, body) of a text/plain leaf in a realistic encoding."""
    style = rng.random()
    if style < 0.45:
        return (
            'Content-Type: text/plain; charset="UTF-8"\nContent-Transfer-Encoding: quoted-printable',
            quopri.encodestring(text.encode("utf-8")),
        )
    if style < 0.75:
        return (
            "Content-Type: text/plain; charset=utf-8; format=flowed\nContent-Transfer-Encoding: 8bit",
            text.replace("\n", " \n").encode("utf-8"),
        )
    if style < 0.9:
        return (
            "Content-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: quoted-printable",
            quopri.encodestring(text.encode("iso-8859-1", "replace")),
        )
    return (
        "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64",
        base64.encodebytes(text.encode("utf-8")),
    )


def _html_of(rng: random.Random, text: str, newsletter: bool = False) -> str:
    paras = "".join(
        f'<p style="margin:0 0 12px 0;font-family:Arial,sans-serif;font-size:14px;color:#333">'
        f"{p.replace(chr(10), '<br>')}</p>\n"
        for p in text.split("\n\n")
    )
    rows = ""
    if newsletter or rng.random() < 0.3:
        rows = "".join(
            f'<tr><td width="120" valign="top" style="padding:8px"><img src="https://cdn.example.com/'
            f'img/{rng.randrange(10**6)}.png" width="120" height="80" alt=""></td>'
            f'<td style="padding:8px"><a href="https://example.com/p/{rng.randrange(10**6)}?utm_source='
            f'mail&amp;utm_medium=email">{_words(rng, 6)}</a><br>{_words(rng, 25)}</td></tr>\n'
            for _ in range(rng.randint(2, 8))
        )
        rows = f'<table width="100%" cellpadding="0" cellspacing="0" border="0">{rows}</table>'
    pixel = (
        f'<img src="https://track.example.com/o/{rng.randrange(10**9)}.gif" width="1" height="1">'
        if newsletter
        else ""
    )
    return (
        '<!DOCTYPE html><html><head><meta http-equiv="Content-Type" content="text/html; '
        'charset=utf-8"><style>body{margin:0} .x{color:red}</style><script>var x=1;</script>'
        '</head><body><div dir="ltr"><div class="gmail_default">\n'
        f"{paras}{rows}{pixel}</div></div></body></html>\n"
    )


def _html_part(html: str) -> tuple[str, bytes]:
    return (
        'Content-Type: text/html; charset="UTF-8"\nContent-Transfer-Encoding: quoted-printable',
        quopri.encodestring(html.encode("utf-8")),
    )


def _attachment(rng: random.Random, index: int) -> tuple[str, bytes]:
    content_type, ext = rng.choice(_ATTACHMENT_TYPES)
    size = int(min(1_500_000, max(1_500, rng.lognormvariate(10.3, 1.2))))  # median ~30 KB
    if content_type == "text/csv":
        payload = "\n".join(
            f"{n};{_words(rng, 3)};{rng.randrange(10**5)}" for n in range(size // 40)
        ).encode("utf-8")
    elif content_type == "text/calendar":
        payload = (
            "BEGIN:VCALENDAR\nVERSION:2.0\nBEGIN:VEVENT\nSUMMARY:"
            f"{_words(rng, 4)}\nDTSTART:20240105T100000Z\nEND:VEVENT\nEND:VCALENDAR\n"
        ).encode()
    else:
        payload = rng.randbytes(size)
    name = f"{_words(rng, 2).replace(' ', '_')}_{index}.{ext}"
    if not name.isascii():
        disp = f"attachment; filename*=UTF-8''{_pct(name)}"
    else:
        disp = f'attachment; filename="{name}"'
    headers = (
        f'Content-Type: {content_type}; name="{name if name.isascii() else "file." + ext}"\n'
        f"Content-Disposition: {disp}\nContent-Transfer-Encoding: base64"
    )
    return headers, base64.encodebytes(payload)


def _pct(text: str) -> str:
    return "".join(
        chr(b) if chr(b).isalnum() or chr(b) in "._-" else f"%{b:02X}" for b in text.encode()
    )


def _multipart(subtype: str, parts: list[tuple[str, bytes]], boundary: str) -> tuple[str, bytes]:
    body = b"".join(
        b"--" + boundary.encode() + b"\n" + h.encode("utf-8") + b"\n\n" + p.rstrip(b"\n") + b"\n"
        for h, p in parts
    )
    body += b"--" + boundary.encode() + b"--\n"
    return f'Content-Type: multipart/{subtype};\n boundary="{boundary}"', body


def _received_chain(rng: random.Random, when: datetime) -> str:
    hops = []
    for hop in range(rng.randint(2, 6)):
        stamp = format_datetime(when + timedelta(seconds=hop * rng.randint(0, 3)))
        hops.append(
            f"Received: from mx{rng.randint(1, 9)}.relay{hop}.example.net "
            f"(mx{rng.randint(1, 9)}.relay{hop}.example.net [192.0.2.{rng.randint(1, 254)}])\n"
            f"\tby mail.bench.example.com (Postfix) with ESMTPS id {rng.randrange(16**10):010X}\n"
            f"\tfor <{TEAM_ADDRESS}>; {stamp}"
        )
    return "\n".join(reversed(hops))


def _auth_headers(rng: random.Random, domain: str) -> str:
    sig = base64.b64encode(rng.randbytes(256)).decode()
    bh = base64.b64encode(rng.randbytes(32)).decode()
    folded_sig = "\n\t ".join(sig[k : k + 70] for k in range(0, len(sig), 70))
    lines = [
        f"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d={domain}; s=sel{rng.randint(1, 3)};\n"
        f"\th=from:to:subject:date:message-id:mime-version:content-type;\n\tbh={bh};\n\tb={folded_sig}",
        f"Authentication-Results: mail.bench.example.com;\n\tdkim=pass header.d={domain};\n"
        f"\tspf=pass smtp.mailfrom={domain};\n\tdmarc=pass header.from={domain}",
    ]
    if rng.random() < 0.4:
        arc = base64.b64encode(rng.randbytes(180)).decode()
        lines.append(
            f"ARC-Seal: i=1; a=rsa-sha256; t={rng.randrange(10**9)}; cv=none; d=example.net;\n\t"
            + "\n\t ".join(arc[k : k + 70] for k in range(0, len(arc), 70))
        )
    return "\n".join(lines)


# --- one message --------------------------------------------------------------------------


def message(i: int, seed: int = SEED) -> bytes:
    rng = _rng(i, seed)
    when = _date(i)
    parent, root, root_subject = _thread_info_iter(i)
    name, address = _customer(random.Random(seed + root))  # one customer per thread
    raw8bit = rng.random() < 0.04
    kind = rng.random()
    headers: list[str] = [_received_chain(rng, when), _auth_headers(rng, _domain(i))]

    subject = root_subject
    if parent is not None:
        subject = rng.choice(_REPLY_PREFIXES) + root_subject
    from_name, from_address = name, address
    to = f"{TEAM_NAME} <{TEAM_ADDRESS}>"
    if parent is not None and rng.random() < 0.15:
        # Our own reply, cc'd to the team address (as it shows up in a shared INBOX).
        from_name, from_address = TEAM_NAME, TEAM_ADDRESS
        to = _address_header(name, address, rng, False)

    text = _paragraphs(rng, _body_size(rng))
    if parent is not None:
        quoted = "\n".join("> " + line for line in _paragraphs(rng, _body_size(rng)).split("\n"))
        text += f"\n\nOn {format_datetime(_date(parent))}, {name} <{address}> wrote:\n{quoted}\n"
    if rng.random() < 0.6:
        text += f"\n\n-- \n{from_name}\n{_words(rng, 8)}\n"

    boundary = f"----=_Part_{rng.randrange(10**8)}_{i}.{rng.randrange(10**12)}"
    if kind < 0.30:
        ctype, body = _text_part(rng, text)
    elif kind < 0.70:
        ctype, body = _multipart(
            "alternative", [_text_part(rng, text), _html_part(_html_of(rng, text))], boundary
        )
    elif kind < 0.76:
        from_name, from_address = "Example Weekly", f"news@{_domain(i)}"
        headers.append(
            f"List-Unsubscribe: <https://example.com/u/{rng.randrange(10**9)}>\n"
            "List-Id: <weekly.example.com>\nPrecedence: bulk"
        )
        ctype, body = _html_part(_html_of(rng, text, newsletter=True))
    elif kind < 0.92:
        inner = (
            _multipart(
                "alternative",
                [_text_part(rng, text), _html_part(_html_of(rng, text))],
                boundary + "_alt",
            )
            if rng.random() < 0.6
            else _text_part(rng, text)
        )
        parts = [inner] + [_attachment(rng, n) for n in range(rng.choice((1, 1, 1, 2, 3)))]
        if rng.random() < 0.2:
            img = base64.encodebytes(rng.randbytes(rng.randint(2_000, 20_000)))
            parts.insert(
                1,
                (
                    f"Content-Type: image/png\nContent-ID: <logo{i}@bench>\n"
                    "Content-Disposition: inline\nContent-Transfer-Encoding: base64",
                    img,
                ),
            )
            ctype, body = _multipart("related", parts[:2], boundary + "_rel")
            if len(parts) > 2:
                ctype, body = _multipart("mixed", [(ctype, body), *parts[2:]], boundary)
        else:
            ctype, body = _multipart("mixed", parts, boundary)
    elif kind < 0.95:
        fwd_name, fwd_address = _customer(rng)
        inner = (
            f"From: {_address_header(fwd_name, fwd_address, rng, False)}\n"
            f"To: {address}\nSubject: {_rfc2047(_words(rng, 5), rng)}\n"
            f"Date: {format_datetime(when - timedelta(days=3))}\n"
            f"Message-ID: <fwd{i}@{_domain(i + 1)}>\nMIME-Version: 1.0\n"
            "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n"
            f"{_paragraphs(rng, _body_size(rng))}\n"
        ).encode()
        subject = "Fwd: " + root_subject
        ctype, body = _multipart(
            "mixed",
            [
                _text_part(rng, text),
                ("Content-Type: message/rfc822\nContent-Disposition: attachment", inner),
            ],
            boundary,
        )
    elif kind < 0.97:
        headers.append("Auto-Submitted: auto-replied\nX-Autoreply: yes")
        subject = "Automatic reply: " + root_subject
        ctype, body = _text_part(rng, "I am out of the office until Monday. " + _words(rng, 40))
    elif kind < 0.98:
        from_name, from_address = "Mail Delivery System", f"MAILER-DAEMON@{_domain(i)}"
        subject = "Undelivered Mail Returned to Sender"
        status = (
            f"Reporting-MTA: dns; mx.{_domain(i)}\n\nFinal-Recipient: rfc822; nobody@example.com\n"
            "Action: failed\nStatus: 5.1.1\n"
        ).encode()
        ctype, body = _multipart(
            "report; report-type=delivery-status",
            [
                ("Content-Type: text/plain; charset=us-ascii", b"Delivery failed.\n"),
                ("Content-Type: message/delivery-status", status),
                (
                    "Content-Type: text/rfc822-headers",
                    f"From: {TEAM_ADDRESS}\nSubject: {root_subject}\n".encode(),
                ),
            ],
            boundary,
        )
    else:
        ctype, body = _text_part(rng, text)

    subject_header = subject if raw8bit else _rfc2047(subject, rng)
    top = [
        *headers,
        f"From: {_address_header(from_name, from_address, rng, raw8bit)}",
        f"To: {to}",
    ]
    if rng.random() < 0.1:
        top.append(f"Cc: {_address_header(*_customer(rng), rng, False)}")
    top += [
        f"Subject: {subject_header}",
        f"Date: {format_datetime(when)}",
        f"Message-ID: {message_id(i)}",
    ]
    if parent is not None:
        refs = _references(i)
        top.append(f"In-Reply-To: {message_id(parent)}")
        top.append("References: " + "\n ".join(refs))
    top += ["MIME-Version: 1.0", ctype]
    head = "\n".join(top)
    raw = head.encode("utf-8") + b"\n\n" + body

    if rng.random() < 0.01:
        raw = _malform(rng, raw, i)
    return raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")


def _malform(rng: random.Random, raw: bytes, i: int) -> bytes:
    """One of the breakages seen in real mailboxes."""
    head, _, body = raw.partition(b"\n\n")
    choice = rng.randrange(9)
    if choice == 0 and b"boundary=" in head:  # the boundary never appears
        return head.replace(b'boundary="', b'boundary="XX') + b"\n\n" + body
    if choice == 1 and body.endswith(b"--\n"):  # unterminated multipart
        return raw[: raw.rfind(b"\n--") + 1]
    if choice == 2:  # invalid base64 in an attachment (or the body)
        return head + b"\n\n" + body.replace(b"A", b"*", 40)
    if choice == 3:  # junk lines among the headers
        lines = head.split(b"\n")
        lines.insert(len(lines) // 2, b"this is not a header line")
        lines.insert(len(lines) // 2, b"X-Broken : spaced name")
        return b"\n".join(lines) + b"\n\n" + body
    if choice == 4:  # unknown charset
        return raw.replace(b"charset=utf-8", b"charset=x-unknown-42", 1).replace(
            b'charset="UTF-8"', b'charset="utf-99"', 1
        )
    if choice == 5:  # an impossible date
        lines = [
            b"Date: Thu, 32 Foo 2023 99:99:99 +9999" if line.startswith(b"Date:") else line
            for line in head.split(b"\n")
        ]
        return b"\n".join(lines) + b"\n\n" + body
    if choice == 6:  # no Message-ID
        lines = [line for line in head.split(b"\n") if not line.startswith(b"Message-ID:")]
        return b"\n".join(lines) + b"\n\n" + body
    if choice == 7:  # undeclared latin-1 bytes in headers
        return head + f"\nX-Note: caf\xe9 M\xfcller {i}".encode("latin-1") + b"\n\n" + body
    cut = max(len(head) + 10, len(raw) * rng.randint(30, 90) // 100)  # truncated
    return raw[:cut]


# --- Maildir ------------------------------------------------------------------------------


class MaildirWriter:
    """Writes messages straight into a Dovecot user's Maildir (tmp -> cur/new rename).

    File names carry S= (size) and W= (size with CRLF) as Dovecot's own delivery
    does, so it never has to read a file just to learn its size.
    """

    def __init__(self, maildir: Path, uid: int | None = None, gid: int | None = None) -> None:
        self.maildir = maildir
        self.uid, self.gid = uid, gid
        for sub in ("", "cur", "new", "tmp"):
            path = maildir / sub
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._chown(path)
        self._pid = os.getpid()

    def _chown(self, path: Path) -> None:
        if self.uid is not None and os.geteuid() == 0:
            os.chown(path, self.uid, self.gid if self.gid is not None else -1)

    def write(self, i: int, raw: bytes, *, new: bool = False, stamp: int | None = None) -> Path:
        stamp = int(_date(i).timestamp()) if stamp is None else stamp
        size, wsize = len(raw), len(raw) + raw.count(b"\n")
        base = f"{stamp}.M{i:08d}P{self._pid}.bench,S={size},W={wsize}"
        tmp = self.maildir / "tmp" / base
        with open(tmp, "wb") as handle:
            handle.write(raw)
        self._chown(tmp)
        final = self.maildir / "new" / base if new else self.maildir / "cur" / f"{base}:2,S"
        os.rename(tmp, final)
        return final


def load(writer: MaildirWriter, start: int, count: int, *, new: bool = False) -> dict:
    """Write messages start..start+count-1; returns size statistics."""
    sizes = []
    started = time.perf_counter()
    for i in range(start, start + count):
        raw = message(i)
        sizes.append(len(raw))
        writer.write(i, raw, new=new)
    elapsed = time.perf_counter() - started
    sizes.sort()
    return {
        "count": count,
        "bytes": sum(sizes),
        "median": sizes[len(sizes) // 2] if sizes else 0,
        "p90": sizes[int(len(sizes) * 0.9)] if sizes else 0,
        "max": sizes[-1] if sizes else 0,
        "seconds": elapsed,
    }


def received_at(i: int) -> datetime:
    """When message ``i`` arrived (its Maildir time stamp; internalDate and
    receivedDateTime in the fake Gmail and Graph servers)."""
    return _date(i)


def messages_with_dates(start: int, count: int, sizes: list[int]):
    """``(raw, received_at)`` of messages start..start+count-1, for a fake server's
    bulk load; appends each size to ``sizes``.

    With CRLF line ends, as the Gmail API's ``raw`` and Graph's ``$value`` hand
    mail out (and as Dovecot serves the Maildir's LF-only files over IMAP)."""
    for i in range(start, start + count):
        raw = message(i).replace(b"\n", b"\r\n")
        sizes.append(len(raw))
        yield raw, _date(i)


def size_stats(sizes: list[int], seconds: float) -> dict:
    ordered = sorted(sizes)
    return {
        "count": len(ordered),
        "bytes": sum(ordered),
        "median": ordered[len(ordered) // 2] if ordered else 0,
        "p90": ordered[int(len(ordered) * 0.9)] if ordered else 0,
        "max": ordered[-1] if ordered else 0,
        "seconds": seconds,
    }


if __name__ == "__main__":  # a quick look at the distribution
    import sys

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    t = time.perf_counter()
    raws = [message(i) for i in range(n)]
    dt = time.perf_counter() - t
    sizes = sorted(len(r) for r in raws)
    print(
        f"{n} messages in {dt:.2f}s; median {sizes[n // 2]} B, p90 {sizes[int(n * 0.9)]} B, "
        f"mean {sum(sizes) // n} B, max {sizes[-1]} B, total {sum(sizes) / 2**20:.1f} MiB"
    )
