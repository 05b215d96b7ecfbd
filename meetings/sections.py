"""The meetings tool's card on Settings > Email: a summary and a link to Settings >
Meetings (registered in ``MeetingsConfig.ready``).

Kept apart from the views so that starting a process (a worker imports every app's
``ready()``) does not load the web and API stack for it.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from meetings.models import MeetingsConnection, SchedulingLink


def email_page_section(request: HttpRequest) -> dict[str, Any]:
    user = request.user
    # Settings > Email is behind login_required; an anonymous user would have no connection.
    connection = (
        MeetingsConnection.objects.filter(user=user).first() if user.is_authenticated else None
    )
    links = SchedulingLink.objects.filter(owner_id=connection.user_id).count() if connection else 0
    return {
        "template": "meetings/settings_email_section.html",
        "connection": connection,
        "links": links,
    }
