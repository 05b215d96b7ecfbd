from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from django.db.models import QuerySet
from rest_framework import mixins, serializers, viewsets

from audit.models import AuditEvent
from audit.selectors import audit_events_for
from core.api import AccountScopedMixin, IsAccountAdmin

if TYPE_CHECKING:
    from rest_framework.permissions import _SupportsHasPermission

    from core.people import Member


class AuditEventOutput(serializers.ModelSerializer):
    class Meta:
        model = AuditEvent
        fields = [
            "id",
            "created_at",
            "actor",
            "actor_name",
            "action",
            "target_type",
            "target_id",
            "target_repr",
            "ip",
            "data",
        ]


class AuditEventViewSet(AccountScopedMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    """Admins: the account's audit log, newest first."""

    serializer_class = AuditEventOutput
    queryset = AuditEvent.objects.none()
    filterset_fields = ["action"]

    def get_permissions(self) -> Sequence[_SupportsHasPermission]:
        return [*super().get_permissions(), IsAccountAdmin()]

    def scoped_queryset(self, user: Member) -> QuerySet[AuditEvent]:
        return audit_events_for(user)
