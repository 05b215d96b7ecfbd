from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.response import Response

from conversations import services
from conversations.models import Inbox
from conversations.selectors import inboxes_visible_to
from core.api import AccountScopedMixin, IsAccountAdmin, client_ip
from inboxes.selectors import mailboxes_visible_to


class InboxOutput(serializers.ModelSerializer):
    mailbox_address = serializers.CharField(source="mailbox.address", default=None)

    class Meta:
        model = Inbox
        fields = ["id", "name", "mailbox", "mailbox_address", "from_name", "created_at"]


class InboxCreateInput(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    from_name = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")


class InboxPatchInput(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False)
    from_name = serializers.CharField(max_length=200, required=False, allow_blank=True)
    mailbox = serializers.UUIDField(required=False, allow_null=True)


class InboxViewSet(
    AccountScopedMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """Conversations inboxes: everyone reads them, admins change them."""

    serializer_class = InboxOutput
    queryset = Inbox.objects.none()
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def scoped_queryset(self, user):
        return inboxes_visible_to(user)

    def get_permissions(self):
        if self.action in ("create", "partial_update", "destroy"):
            return [*super().get_permissions(), IsAccountAdmin()]
        return super().get_permissions()

    @extend_schema(request=InboxCreateInput, responses={201: InboxOutput})
    def create(self, request):
        data = InboxCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        inbox = services.inbox_create(
            actor=request.user, ip=client_ip(request), **data.validated_data
        )
        return Response(InboxOutput(inbox).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=InboxPatchInput, responses=InboxOutput)
    def partial_update(self, request, pk=None):
        inbox = self.get_object()
        data = InboxPatchInput(data=request.data)
        data.is_valid(raise_exception=True)
        changes = dict(data.validated_data)
        if "mailbox" in changes and changes["mailbox"] is not None:
            changes["mailbox"] = get_object_or_404(
                mailboxes_visible_to(request.user), pk=changes["mailbox"]
            )
        inbox = services.inbox_update(
            actor=request.user, inbox=inbox, ip=client_ip(request), **changes
        )
        return Response(InboxOutput(inbox).data)

    def destroy(self, request, pk=None):
        services.inbox_delete(actor=request.user, inbox=self.get_object(), ip=client_ip(request))
        return Response(status=status.HTTP_204_NO_CONTENT)
