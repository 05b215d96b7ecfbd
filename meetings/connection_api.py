"""``GET, PUT, DELETE /api/v1/meetings/connection/``: the caller's meetings connection.

Output ``{id, address, calendar, calendar_status, needs_calendar_consent,
calendar_consent_url, calendar_error, created_at}``; PUT takes ``{address,
calendar?, caldav?: {url, username, password}}`` (the password is never echoed).
"""

from __future__ import annotations

from typing import Any

from django.urls import reverse
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.auth import api_user
from core.api import client_ip
from core.errors import NotFoundError
from meetings import services
from meetings.calendars.consent import CONSENT_PROVIDER, calendar_status_refresh
from meetings.models import CalendarKind, CalendarStatus, MeetingsConnection


def calendar_consent_url(connection: MeetingsConnection) -> str:
    """Where the settings page sends the user to allow the calendar ("" when not needed)."""
    if connection.calendar_status != CalendarStatus.NEEDS_CONSENT:
        return ""
    provider = CONSENT_PROVIDER.get(CalendarKind(connection.calendar))
    if provider is None:
        return ""
    return reverse("meetings-calendar-consent", args=[provider])


class MeetingsConnectionOutput(serializers.ModelSerializer):
    needs_calendar_consent = serializers.SerializerMethodField()
    calendar_consent_url = serializers.SerializerMethodField()
    caldav_url = serializers.CharField(read_only=True)
    caldav_username = serializers.CharField(read_only=True)

    class Meta:
        model = MeetingsConnection
        fields = [
            "id",
            "address",
            "calendar",
            "calendar_status",
            "needs_calendar_consent",
            "calendar_consent_url",
            "calendar_error",
            "caldav_url",
            "caldav_username",
            "created_at",
        ]

    def get_needs_calendar_consent(self, connection: MeetingsConnection) -> bool:
        return connection.calendar_status == CalendarStatus.NEEDS_CONSENT

    def get_calendar_consent_url(self, connection: MeetingsConnection) -> str:
        return calendar_consent_url(connection)


class CaldavInput(serializers.Serializer):
    url = serializers.CharField(max_length=1000, allow_blank=True, required=False, default="")
    username = serializers.CharField(max_length=320, allow_blank=True, required=False, default="")
    password = serializers.CharField(
        max_length=1000, allow_blank=True, required=False, default="", trim_whitespace=False
    )


class MeetingsConnectionInput(serializers.Serializer):
    address = serializers.CharField(max_length=320)
    calendar = serializers.ChoiceField(
        choices=CalendarKind.values, required=False, default=CalendarKind.NONE
    )
    caldav = CaldavInput(required=False, allow_null=True)


def caldav_input(data: dict[str, Any] | None) -> services.CaldavInput | None:
    if not data:
        return None
    return services.CaldavInput(
        url=str(data.get("url") or "").strip(),
        username=str(data.get("username") or "").strip(),
        password=str(data.get("password") or ""),
    )


class MeetingsConnectionView(APIView):
    """The current user's meetings connection (R4)."""

    def _connection(self, request: Request) -> MeetingsConnection:
        connection = MeetingsConnection.objects.filter(user=api_user(request)).first()
        if connection is None:
            raise NotFoundError("You have no meetings connection.")
        return connection

    @extend_schema(responses=MeetingsConnectionOutput)
    def get(self, request: Request) -> Response:
        connection = self._connection(request)
        calendar_status_refresh(connection)
        return Response(MeetingsConnectionOutput(connection).data)

    @extend_schema(request=MeetingsConnectionInput, responses=MeetingsConnectionOutput)
    def put(self, request: Request) -> Response:
        data = MeetingsConnectionInput(data=request.data)
        data.is_valid(raise_exception=True)
        connection = services.meetings_connect(
            user=api_user(request),
            address=data.validated_data["address"],
            calendar=data.validated_data.get("calendar") or CalendarKind.NONE,
            caldav=caldav_input(data.validated_data.get("caldav")),
            ip=client_ip(request),
        )
        return Response(MeetingsConnectionOutput(connection).data)

    @extend_schema(request=None, responses={204: None})
    def delete(self, request: Request) -> Response:
        self._connection(request)
        services.meetings_disconnect(user=api_user(request), ip=client_ip(request))
        return Response(status=status.HTTP_204_NO_CONTENT)
