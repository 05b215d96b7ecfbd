from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from notifications.views import poll, unread_count


def bell(request: HttpRequest) -> dict[str, Any]:
    """The bell's unread count on every page a signed-in user sees."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {"unread": unread_count(user), "poll": poll()}
