from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from django.db.models import QuerySet

from audit.models import AuditEvent

if TYPE_CHECKING:
    from core.people import Member


def audit_events_for(user: Member) -> QuerySet[AuditEvent]:
    """Admins read their own account's log, newest first."""
    if not user.is_admin:
        return AuditEvent.objects.none()
    return AuditEvent.objects.filter(account_id=user.account_id).select_related("actor")


def audit_events_filtered(
    user: Member, *, action: str = "", actor: str = ""
) -> QuerySet[AuditEvent]:
    """The log filtered by action (exact, or a prefix ending in ".": ``user.``) and by
    the person who acted (an id, or ``system``); ValueError for an actor that is neither."""
    events = audit_events_for(user)
    if action.endswith("."):
        events = events.filter(action__startswith=action)
    elif action:
        events = events.filter(action=action)
    if actor == "system":
        events = events.filter(actor__isnull=True)
    elif actor:
        events = events.filter(actor_id=uuid.UUID(actor))
    return events.order_by("-created_at", "-id")


def audit_filter_choices(user: Member) -> dict[str, list[Any]]:
    """What the filters offer: the actions and the people the log holds."""
    events = audit_events_for(user).order_by()
    actions = sorted(set(events.values_list("action", flat=True)))
    people: dict[str, str] = {}
    for actor_id, name in events.filter(actor__isnull=False).values_list("actor_id", "actor_name"):
        people.setdefault(str(actor_id), name)
    return {
        "actions": actions,
        "people": sorted(people.items(), key=lambda item: item[1].lower()),
    }
