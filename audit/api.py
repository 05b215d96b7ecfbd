from rest_framework import mixins, serializers, viewsets

from audit.models import AuditEvent
from audit.selectors import audit_events_for
from core.api import AccountScopedMixin, IsAccountAdmin


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

    def get_permissions(self):
        return [*super().get_permissions(), IsAccountAdmin()]

    def scoped_queryset(self, user):
        return audit_events_for(user)
