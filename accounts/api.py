from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from uuid import UUID

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import services
from accounts.auth import api_user
from accounts.models import Role, Team, User
from accounts.selectors import teams_visible_to, users_by_ids, users_visible_to
from core.api import AccountScopedMixin, IsAccountAdmin, client_ip

if TYPE_CHECKING:
    from rest_framework.permissions import _SupportsHasPermission


class AccountOutput(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    plan = serializers.CharField()


class UserOutput(serializers.ModelSerializer):
    class Meta:
        model = User
        fields = ["id", "email", "full_name", "role", "is_active", "deactivated_at", "created_at"]


class MeOutput(UserOutput):
    account = AccountOutput()
    is_admin = serializers.BooleanField()

    class Meta(UserOutput.Meta):
        fields = [*UserOutput.Meta.fields, "account", "is_admin"]


class TokenInput(serializers.Serializer):
    email = serializers.CharField(max_length=254)
    password = serializers.CharField(max_length=1024, trim_whitespace=False)


class TokenView(APIView):
    """Exchange email and password for an API token."""

    permission_classes = [AllowAny]
    authentication_classes = []

    @extend_schema(
        request=TokenInput,
        responses=inline_serializer("TokenOutput", {"token": serializers.CharField()}),
    )
    def post(self, request: Request) -> Response:
        data = TokenInput(data=request.data)
        data.is_valid(raise_exception=True)
        token = services.token_obtain(request=request, **data.validated_data)
        return Response({"token": token})


class MeView(APIView):
    @extend_schema(responses=MeOutput)
    def get(self, request: Request) -> Response:
        return Response(MeOutput(api_user(request)).data)


class UserInput(serializers.Serializer):
    email = serializers.EmailField(max_length=254)
    full_name = serializers.CharField(max_length=200, allow_blank=True, default="")
    role = serializers.ChoiceField(choices=Role.choices, default=Role.MEMBER)
    password = serializers.CharField(max_length=1024, trim_whitespace=False)


class UserViewSet(
    AccountScopedMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """Everyone in the account can list users; only admins change them."""

    serializer_class = UserOutput
    queryset = User.objects.none()

    def scoped_queryset(self, user: User) -> QuerySet[User]:
        return users_visible_to(user)

    def get_permissions(self) -> Sequence[_SupportsHasPermission]:
        if self.action in ("create", "deactivate", "reactivate"):
            return [*super().get_permissions(), IsAccountAdmin()]
        return super().get_permissions()

    @extend_schema(request=UserInput, responses={201: UserOutput})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        data = UserInput(data=request.data)
        data.is_valid(raise_exception=True)
        actor = api_user(request)
        user = services.user_create(
            actor=actor,
            account=actor.account,
            ip=client_ip(request),
            **data.validated_data,
        )
        return Response(UserOutput(user).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses=UserOutput)
    @action(detail=True, methods=["post"])
    def deactivate(self, request: Request, pk: str | None = None) -> Response:
        user = services.user_deactivate(
            actor=api_user(request), user=self.get_object(), ip=client_ip(request)
        )
        return Response(UserOutput(user).data)

    @extend_schema(request=None, responses=UserOutput)
    @action(detail=True, methods=["post"])
    def reactivate(self, request: Request, pk: str | None = None) -> Response:
        user = services.user_reactivate(
            actor=api_user(request), user=self.get_object(), ip=client_ip(request)
        )
        return Response(UserOutput(user).data)


class TeamOutput(serializers.ModelSerializer):
    members: serializers.PrimaryKeyRelatedField[User] = serializers.PrimaryKeyRelatedField(
        many=True, read_only=True
    )

    class Meta:
        model = Team
        fields = ["id", "name", "members", "created_at"]


class TeamInput(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    members = serializers.ListField(child=serializers.UUIDField(), required=False, default=list)


class TeamViewSet(
    AccountScopedMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """Teams: everyone reads them; admins create, change and delete them."""

    serializer_class = TeamOutput
    queryset = Team.objects.none()
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def scoped_queryset(self, user: User) -> QuerySet[Team]:
        return teams_visible_to(user).prefetch_related("members")

    def get_permissions(self) -> Sequence[_SupportsHasPermission]:
        if self.action in ("create", "partial_update", "destroy"):
            return [*super().get_permissions(), IsAccountAdmin()]
        return super().get_permissions()

    def _members(self, request: Request, ids: list[UUID]) -> list[User]:
        members = list(users_by_ids(api_user(request), ids))
        if len(members) != len(set(ids)):
            raise NotFound()
        return members

    @extend_schema(request=TeamInput, responses={201: TeamOutput})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        data = TeamInput(data=request.data)
        data.is_valid(raise_exception=True)
        team = services.team_save(
            actor=api_user(request),
            name=data.validated_data["name"],
            members=self._members(request, data.validated_data["members"]),
            ip=client_ip(request),
        )
        return Response(TeamOutput(team).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=TeamInput, responses=TeamOutput)
    def partial_update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        team = self.get_object()
        changes = request.data
        current = {"name": team.name, "members": [str(m.pk) for m in team.members.all()]}
        # A body that is not an object gets the serializer's own "expected a dictionary".
        data = TeamInput(data={**current, **changes} if isinstance(changes, dict) else changes)
        data.is_valid(raise_exception=True)
        team = services.team_save(
            actor=api_user(request),
            team=team,
            name=data.validated_data["name"],
            members=self._members(request, data.validated_data["members"]),
            ip=client_ip(request),
        )
        return Response(TeamOutput(team).data)

    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        services.team_delete(actor=api_user(request), team=self.get_object(), ip=client_ip(request))
        return Response(status=status.HTTP_204_NO_CONTENT)
