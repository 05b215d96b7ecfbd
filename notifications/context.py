from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from notifications.views import poll, unread_count


def bell(request: HttpRequest) -> dict[str, Any]:
    """The bell's unread count on every page a signed-in user sees: counted only when a
    template shows the bell (the full pages), not for every htmx fragment."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {"unread": SimpleLazyObject(lambda: unread_count(user)), "poll": poll()}
