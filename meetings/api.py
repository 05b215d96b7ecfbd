from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.auth import api_user
from core.api import client_ip
from core.errors import NotFoundError
from meetings import services
from meetings.models import MeetingsConnection


class MeetingsConnectionOutput(serializers.ModelSerializer):
    class Meta:
        model = MeetingsConnection
        fields = ["id", "address", "created_at"]


class MeetingsConnectionInput(serializers.Serializer):
    address = serializers.CharField(max_length=320)


class MeetingsConnectionView(APIView):
    """The current user's meetings connection (R4)."""

    def _connection(self, request: Request) -> MeetingsConnection:
        connection = MeetingsConnection.objects.filter(user=api_user(request)).first()
        if connection is None:
            raise NotFoundError("You have no meetings connection.")
        return connection

    @extend_schema(responses=MeetingsConnectionOutput)
    def get(self, request: Request) -> Response:
        return Response(MeetingsConnectionOutput(self._connection(request)).data)

    @extend_schema(request=MeetingsConnectionInput, responses=MeetingsConnectionOutput)
    def put(self, request: Request) -> Response:
        data = MeetingsConnectionInput(data=request.data)
        data.is_valid(raise_exception=True)
        connection = services.meetings_connect(
            user=api_user(request), address=data.validated_data["address"], ip=client_ip(request)
        )
        return Response(MeetingsConnectionOutput(connection).data)

    @extend_schema(request=None, responses={204: None})
    def delete(self, request: Request) -> Response:
        self._connection(request)
        services.meetings_disconnect(user=api_user(request), ip=client_ip(request))
        return Response(status=status.HTTP_204_NO_CONTENT)
