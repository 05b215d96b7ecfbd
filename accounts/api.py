from __future__ import annotations

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import services
from accounts.models import Role, User
from accounts.selectors import users_visible_to
from core.api import AccountScopedMixin, IsAccountAdmin, client_ip


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
    authentication_classes: list = []

    @extend_schema(
        request=TokenInput,
        responses=inline_serializer("TokenOutput", {"token": serializers.CharField()}),
    )
    def post(self, request):
        data = TokenInput(data=request.data)
        data.is_valid(raise_exception=True)
        token = services.token_obtain(request=request, **data.validated_data)
        return Response({"token": token})


class MeView(APIView):
    @extend_schema(responses=MeOutput)
    def get(self, request):
        return Response(MeOutput(request.user).data)


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

    def scoped_queryset(self, user):
        return users_visible_to(user)

    def get_permissions(self):
        if self.action in ("create", "deactivate", "reactivate"):
            return [*super().get_permissions(), IsAccountAdmin()]
        return super().get_permissions()

    @extend_schema(request=UserInput, responses={201: UserOutput})
    def create(self, request):
        data = UserInput(data=request.data)
        data.is_valid(raise_exception=True)
        user = services.user_create(
            actor=request.user,
            account=request.user.account,
            ip=client_ip(request),
            **data.validated_data,
        )
        return Response(UserOutput(user).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses=UserOutput)
    @action(detail=True, methods=["post"])
    def deactivate(self, request, pk=None):
        user = services.user_deactivate(
            actor=request.user, user=self.get_object(), ip=client_ip(request)
        )
        return Response(UserOutput(user).data)

    @extend_schema(request=None, responses=UserOutput)
    @action(detail=True, methods=["post"])
    def reactivate(self, request, pk=None):
        user = services.user_reactivate(
            actor=request.user, user=self.get_object(), ip=client_ip(request)
        )
        return Response(UserOutput(user).data)
