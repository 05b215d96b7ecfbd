"""R10: each user's log & track preferences, never-log list and default font."""

from __future__ import annotations

import re
from collections.abc import Iterable
from uuid import UUID

import idna

from accounts.models import User
from core.errors import Invalid
from crm.compose import FONT_SIZE_MAX, FONT_SIZE_MIN
from crm.models import Preferences
from inboxes.addresses import InvalidAddress, canonical_address

MAX_NEVER_LOG = 1000
# A font family the page offers, or any other name of letters, digits, spaces and
# hyphens (it is escaped in the email all the same: crm/compose.py).
_FAMILY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 \-]{0,63}$")
_DOMAIN_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def preferences_for(user: User) -> Preferences:
    """The user's preferences, created with the defaults on first use."""
    found, _ = Preferences.objects.get_or_create(user=user)
    return found


class NeverLog:
    """A never-log list (canonical addresses and ``@domain`` entries) as set lookups:
    ``canonical in never_log``."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.entries = frozenset(entry.strip().lower() for entry in entries if entry.strip())

    def __contains__(self, canonical: object) -> bool:
        if not isinstance(canonical, str) or not self.entries:
            return False
        return canonical in self.entries or "@" + canonical.rsplit("@", 1)[-1] in self.entries


def never_log_of(user_id: UUID | None) -> NeverLog:
    """The never-log list of the user ``user_id`` (empty when they never set one), read
    without creating their preferences."""
    if user_id is None:
        return NeverLog([])
    entries = (
        Preferences.objects.filter(user_id=user_id).values_list("never_log", flat=True).first()
    )
    return NeverLog(entries or [])


def never_logged(preferences: Preferences, canonical: str) -> bool:
    """Whether ``canonical`` (an address in canonical form) is on the never-log list,
    by its address or its ``@domain``."""
    return canonical in NeverLog(preferences.never_log)


def never_log_domain(domain: str) -> str:
    """``example.com`` as stored: IDNA (punycode), lower-case. ValueError if it is not a
    domain name."""
    try:
        ascii_domain = idna.encode(domain.strip().rstrip("."), uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError) as exc:
        raise ValueError(str(exc)) from exc
    ascii_domain = ascii_domain.lower()
    labels = ascii_domain.split(".")
    if len(ascii_domain) > 253 or not all(_DOMAIN_LABEL.match(label) for label in labels):
        raise ValueError("not a domain name")
    return ascii_domain


def never_log_entries(entries: list[str]) -> list[str]:
    """The entries as stored (canonical addresses, ``@domain`` in IDNA), in order, once
    each; blank ones skipped. Invalid names the entries that are neither."""
    stored: list[str] = []
    problems: list[str] = []
    for entry in entries:
        entry = entry.strip()
        if not entry:
            continue
        try:
            if entry.startswith("@"):
                value = "@" + never_log_domain(entry[1:])
            else:
                value = canonical_address(entry)
        except (ValueError, InvalidAddress):
            problems.append(f"{entry[:80]!r} is not an email address or an @domain.")
            continue
        if value not in stored:
            stored.append(value)
    if problems:
        raise Invalid(
            "Some never-log entries are not addresses or domains: correct or remove them.",
            errors={"never_log": problems},
        )
    if len(stored) > MAX_NEVER_LOG:
        raise Invalid(
            f"The never-log list holds at most {MAX_NEVER_LOG} entries.",
            errors={"never_log": [f"At most {MAX_NEVER_LOG} entries."]},
        )
    return stored


def check_font(family: str, size: int) -> tuple[str, int]:
    errors: dict[str, list[str]] = {}
    family = family.strip()
    if not _FAMILY.match(family):
        errors["family"] = ["Letters, digits, spaces and hyphens only (at most 64)."]
    if not FONT_SIZE_MIN <= size <= FONT_SIZE_MAX:
        errors["size"] = [f"Between {FONT_SIZE_MIN} and {FONT_SIZE_MAX} px."]
    if errors:
        raise Invalid("Pick a font family and a size between 8 and 32 px.", errors={"font": errors})
    return family, size


def preferences_update(
    *,
    user: User,
    log_sent_email: bool | None = None,
    track_opens: bool | None = None,
    track_clicks: bool | None = None,
    never_log: list[str] | None = None,
    font_family: str | None = None,
    font_size: int | None = None,
) -> Preferences:
    """Change what is given (None leaves a preference as it is); all or nothing."""
    preferences = preferences_for(user)
    family, size = check_font(
        preferences.font_family if font_family is None else font_family,
        preferences.font_size if font_size is None else font_size,
    )
    if never_log is not None:
        preferences.never_log = never_log_entries(never_log)
    for name, value in (
        ("log_sent_email", log_sent_email),
        ("track_opens", track_opens),
        ("track_clicks", track_clicks),
    ):
        if value is not None:
            setattr(preferences, name, value)
    preferences.font_family, preferences.font_size = family, size
    preferences.save(
        update_fields=[
            "log_sent_email",
            "track_opens",
            "track_clicks",
            "never_log",
            "font_family",
            "font_size",
        ]
    )
    return preferences
