"""Reading a bounce written for people: the failed recipients of a plain-text report
(Exim, qmail, Postfix, Sendmail, old Exchange), and RFC 3463 status codes said in
plain words. Pure Python, used by ``inboxes/mime/machine.py``."""

from __future__ import annotations

import re

_STATUS = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.]*\d)")
_SMTP_REPLY = re.compile(r"(?<![\d.])([45])[0-5]\d(?:[ -]|$)", re.M)

# RFC 3463 (and RFC 7505, RFC 7372) subject and detail codes, in words a user reads.
_WORDS = {
    "0.0": "the receiving server refused it",
    "1.0": "a problem with the address",
    "1.1": "mailbox does not exist",
    "1.2": "the recipient's domain does not exist",
    "1.3": "the address is not valid",
    "1.4": "the address is ambiguous",
    "1.6": "the mailbox has moved",
    "1.7": "the sender's address was refused",
    "1.8": "the sender's domain was refused",
    "1.10": "the recipient's domain accepts no mail",
    "2.0": "a problem with the mailbox",
    "2.1": "mailbox disabled",
    "2.2": "mailbox full",
    "2.3": "message too large for the mailbox",
    "2.4": "a mailing list expansion problem",
    "3.0": "a problem with the receiving mail system",
    "3.1": "the receiving mail system is full",
    "3.2": "the receiving system is not accepting mail",
    "3.4": "message too large",
    "4.0": "a network or routing problem",
    "4.1": "no answer from the recipient's server",
    "4.2": "the connection to the recipient's server broke",
    "4.3": "the recipient's server could not be found",
    "4.4": "no route to the recipient's server",
    "4.6": "a mail routing loop",
    "4.7": "delivery took too long and was given up",
    "5.0": "a mail protocol problem",
    "5.3": "too many recipients",
    "6.0": "the message's content was refused",
    "7.0": "refused by the recipient's server's policy",
    "7.1": "refused by the recipient's server: delivery not authorised",
    "7.2": "mailing list expansion prohibited",
    "7.8": "authentication failed",
    "7.9": "the authentication method is too weak",
    "7.23": "refused: the sender's server is not allowed to send for its domain (SPF)",
    "7.25": "refused: the sending server's name does not resolve",
    "7.26": "refused: the message failed authentication (DMARC)",
}
# What a server's own text says, for reports without an enhanced status code.
_KEYWORDS = (
    (re.compile(r"null mx", re.I), "1.10"),
    (
        re.compile(
            r"host or domain name not found|domain not found|name service error"
            r"|no mx|nxdomain",
            re.I,
        ),
        "1.2",
    ),
    (
        re.compile(
            r"user unknown|unknown user|no such user|does not exist|doesn'?t exist"
            r"|not found|unknown recipient|recipient address rejected|invalid recipient"
            r"|no mailbox|mailbox unavailable|address rejected|couldn'?t be found",
            re.I,
        ),
        "1.1",
    ),
    (re.compile(r"quota|mailbox (is )?full|over ?quota|insufficient storage", re.I), "2.2"),
    (re.compile(r"too large|too big|size limit", re.I), "3.4"),
    (re.compile(r"spam|blocked|blacklist|blocklist|policy|denied|rejected", re.I), "7.1"),
    (re.compile(r"timed? ?out|too long|expired", re.I), "4.7"),
)
_COPY_MARKER = re.compile(
    r"^(?:-{2,}.*(?:copy of|below this line|original message|undelivered message)"
    r"|original message headers:|-+ ?original message ?-+|-+ ?the original message"
    r"|message headers follow)",
    re.I | re.M,
)
_RECIPIENT_LINE = re.compile(
    r"^([ \t]*)<?([\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+)>?"
    r"(?:[ \t]*\((?:expanded from|generated from)?[^)]*\))?[ \t]*:?[ \t]*(.*)$"
)
_PERMANENT = re.compile(r"permanent (?:error|failure|fatal)|fatal errors?|has failed", re.I)
_TEMPORARY = re.compile(r"temporar(?:y|ily)|still trying|will (?:be )?retr|delayed", re.I)


def status_in(text: str) -> str:
    """The first RFC 3463 code in ``text`` ("5.1.1"), or ""."""
    found = _STATUS.search(text or "")
    return ".".join(found.groups()) if found else ""


def plain_words(status: str, server_text: str = "") -> str:
    """``status`` in words ("mailbox does not exist" for 5.1.1), helped by the server's
    text where the code is generic."""
    _, _, detail = status.partition(".")
    # X.1.10 is a null MX to RFC 7505 but "recipient not found" to Exchange: ask the text.
    words = _WORDS.get(detail, "") if detail not in ("", "0.0", "1.10") else ""
    if not words:
        for pattern, code in _KEYWORDS:
            if pattern.search(server_text or ""):
                words = _WORDS[code]
                break
    if not words:
        words = _WORDS.get(detail.split(".")[0] + ".0", _WORDS["0.0"]) if detail else ""
    if not words:
        words = "the receiving server refused it"
    if status.startswith("4"):
        words += " (a temporary failure)"
    return words


def _report_part(text: str) -> str:
    """The report itself, without the copy of the returned message that follows it."""
    marker = _COPY_MARKER.search(text)
    return text[: marker.start()] if marker else text


def failed_recipients_in_text(text: str) -> list[dict[str, str]]:
    """``[{address, action, status, diagnostic, server_text}]`` from a report written
    for people: each line that starts with an address, with the lines that follow it
    up to a blank line (Exim's indented block, qmail's and Postfix's paragraph)."""
    report = _report_part((text or "").replace("\r\n", "\n"))[: 64 * 1024]
    lines = report.split("\n")
    permanent = bool(_PERMANENT.search(report)) or not _TEMPORARY.search(report)
    found: dict[str, dict[str, str]] = {}
    index = 0
    while index < len(lines):
        match = _RECIPIENT_LINE.match(lines[index])
        index += 1
        if match is None:
            continue
        indent, address, rest = match.groups()
        detail = [rest] if rest else []
        while index < len(lines) and lines[index].strip():
            following = _RECIPIENT_LINE.match(lines[index])
            if following and len(following.group(1)) <= len(indent):
                break
            detail.append(lines[index].strip())
            index += 1
        server_text = " ".join(part.strip() for part in detail if part.strip())
        if address.lower() in found:
            continue
        status = status_in(server_text)
        if not status:
            reply = _SMTP_REPLY.search(server_text)
            klass = reply.group(1) if reply else ("5" if permanent else "4")
            status = f"{klass}.0.0"
        found[address.lower()] = {
            "address": address,
            "action": "failed" if status.startswith("5") else "delayed",
            "status": status,
            "diagnostic": plain_words(status, server_text),
            "server_text": server_text[:1000],
        }
    return list(found.values())
