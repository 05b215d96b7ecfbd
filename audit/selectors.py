from __future__ import annotations

from typing import TYPE_CHECKING

from django.db.models import QuerySet

from audit.models import AuditEvent

if TYPE_CHECKING:
    from core.people import Member


def audit_events_for(user: Member) -> QuerySet[AuditEvent]:
    """Admins read their own account's log, newest first."""
    if not user.is_admin:
        return AuditEvent.objects.none()
    return AuditEvent.objects.filter(account_id=user.account_id).select_related("actor")
