"""Canonical email addresses (DESIGN.md section 5).

Two spellings of one mailbox must compare equal, because the rules (R1-R4) and
the database constraint that backs them compare canonical forms.
"""

from __future__ import annotations

import idna
from email_validator import EmailNotValidError, validate_email

from core.errors import Invalid

GMAIL_DOMAINS = {"gmail.com", "googlemail.com"}
MAX_ADDRESS_LENGTH = 254


class InvalidAddress(Invalid):
    def __init__(self, address: str, reason: str) -> None:
        super().__init__(
            f"{address!r} is not a valid email address: {reason}",
            errors={"address": [f"Not a valid email address: {reason}"]},
        )


def canonical_address(address: str) -> str:
    """Lower-case local part, IDNA domain; Gmail ignores dots and +tags.

    Raises InvalidAddress (code ``invalid``) for anything that is not an address.
    """
    if not isinstance(address, str) or not address.strip():
        raise InvalidAddress(str(address), "it is empty")
    text = address.strip()
    if len(text) > MAX_ADDRESS_LENGTH:
        raise InvalidAddress(text[:40] + "...", "it is too long")
    try:
        parsed = validate_email(
            text, check_deliverability=False, allow_smtputf8=True, allow_quoted_local=False
        )
    except EmailNotValidError as exc:
        raise InvalidAddress(text, str(exc)) from exc
    try:
        domain = idna.encode(parsed.domain, uts46=True).decode("ascii").lower()
    except idna.IDNAError as exc:
        raise InvalidAddress(text, f"the domain is not valid ({exc})") from exc
    local = parsed.local_part.lower()
    if domain in GMAIL_DOMAINS:
        local = local.split("+", 1)[0].replace(".", "")
        domain = "gmail.com"
        if not local:
            raise InvalidAddress(text, "the Gmail user name is empty")
    return f"{local}@{domain}"
