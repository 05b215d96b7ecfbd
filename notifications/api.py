"""``/api/v1/notifications/`` and ``/api/v1/me/notification-settings/`` (DESIGN.md 4)."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import mixins, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.auth import api_user
from core.api import AccountScopedMixin
from notifications.models import Kind, Notification
from notifications.services import (
    notification_read,
    notifications_read_all,
    settings_for,
    settings_update,
)


class SubjectOutput(serializers.Serializer):
    type = serializers.CharField()
    id = serializers.CharField()


class NotificationOutput(serializers.ModelSerializer):
    at = serializers.DateTimeField(source="created_at")
    read = serializers.SerializerMethodField()
    subject = serializers.SerializerMethodField()

    class Meta:
        model = Notification
        fields = ["id", "kind", "at", "read", "resolved_at", "text", "url", "subject"]

    def get_read(self, notification: Notification) -> bool:
        return notification.read_at is not None

    @extend_schema(responses=SubjectOutput)
    def get_subject(self, notification: Notification) -> dict[str, str]:
        return {"type": notification.subject_type, "id": notification.subject_id}


class NotificationViewSet(AccountScopedMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    """The caller's notifications, newest first; ``?unread=true`` for the unread ones."""

    serializer_class = NotificationOutput
    queryset = Notification.objects.none()

    def scoped_queryset(self, user: Any) -> QuerySet[Notification]:
        found = Notification.objects.filter(user=user, account_id=user.account_id, in_app=True)
        if self.request.query_params.get("unread") in ("true", "1"):
            found = found.filter(read_at__isnull=True)
        return found

    @extend_schema(request=None, responses=NotificationOutput)
    @action(detail=True, methods=["post"])
    def read(self, request: Request, pk: str | None = None) -> Response:
        notification = self.get_object()
        notification = notification_read(user=api_user(request), notification_id=notification.pk)
        return Response(NotificationOutput(notification).data)

    @extend_schema(
        request=None,
        responses=inline_serializer("ReadAll", {"marked": serializers.IntegerField()}),
    )
    @action(detail=False, methods=["post"], url_path="read-all")
    def read_all(self, request: Request) -> Response:
        return Response({"marked": notifications_read_all(user=api_user(request))})


class ChoiceSerializer(serializers.Serializer):
    in_app = serializers.BooleanField(required=False)
    email = serializers.BooleanField(required=False)


# One optional ``{in_app, email}`` per kind of notification.
SettingsSerializer: type[serializers.Serializer] = type(
    "NotificationSettingsSerializer",
    (serializers.Serializer,),
    {kind: ChoiceSerializer(required=False) for kind in Kind.values},
)


class NotificationSettingsView(APIView):
    """Per kind: ``{in_app, email}``. PUT changes the kinds it names."""

    @extend_schema(responses=SettingsSerializer)
    def get(self, request: Request) -> Response:
        return Response(settings_for(api_user(request)))

    @extend_schema(request=SettingsSerializer, responses=SettingsSerializer)
    def put(self, request: Request) -> Response:
        serializer = SettingsSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        unknown = (
            sorted(set(request.data) - set(Kind.values)) if isinstance(request.data, dict) else []
        )
        if unknown:
            raise serializers.ValidationError({k: ["Not a kind of notification."] for k in unknown})
        return Response(settings_update(user=api_user(request), changes=serializer.validated_data))
