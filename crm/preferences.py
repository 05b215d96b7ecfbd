"""R10: each user's log & track preferences, never-log list and default font."""

from __future__ import annotations

from accounts.models import User
from crm.models import Preferences


def preferences_for(user: User) -> Preferences:
    """The user's preferences, created with the defaults on first use."""
    found, _ = Preferences.objects.get_or_create(user=user)
    return found


def never_logged(preferences: Preferences, canonical: str) -> bool:
    """Whether ``canonical`` (an address in canonical form) is on the never-log list,
    by its address or its ``@domain``."""
    entries = set(preferences.never_log)
    return canonical in entries or ("@" + canonical.rsplit("@", 1)[-1]) in entries
