"""R10: each user's log & track preferences, never-log list and default font."""

from __future__ import annotations

from collections.abc import Iterable
from uuid import UUID

from accounts.models import User
from crm.models import Preferences


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
