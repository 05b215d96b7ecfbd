from __future__ import annotations

from uuid import UUID

from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_field, inline_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.auth import api_user
from accounts.selectors import users_visible_to
from core.api import AccountScopedMixin, client_ip
from inboxes import history, releases, send_limits, services, sync
from inboxes.history import BACKFILL_DAYS_CHOICES, BACKFILL_LABELS, DEFAULT_BACKFILL_DAYS
from inboxes.models import Mailbox, MailboxKind, Provider, Security
from inboxes.outbox.limits import limits_of
from inboxes.selectors import inboxes_visible_to, mailboxes_visible_to
from inboxes.throttling import failed_connection_tests_limited


class ServerOutput(serializers.Serializer):
    host = serializers.CharField()
    port = serializers.IntegerField()
    security = serializers.CharField()
    username = serializers.CharField()


class SyncOutput(serializers.Serializer):
    state = serializers.CharField(source="sync_state")
    done = serializers.IntegerField(source="sync_done")
    total = serializers.IntegerField(source="sync_total", allow_null=True)
    last_synced_at = serializers.DateTimeField(allow_null=True)
    last_error = serializers.CharField(source="sync_last_error")


def _inbox_of(mailbox: Mailbox):
    try:
        return mailbox.inbox
    except Mailbox.inbox.RelatedObjectDoesNotExist:
        return None


def _server_of(mailbox: Mailbox, prefix: str) -> dict | None:
    if mailbox.provider != Provider.IMAP or not getattr(mailbox, f"{prefix}_host"):
        return None
    return {
        "host": getattr(mailbox, f"{prefix}_host"),
        "port": getattr(mailbox, f"{prefix}_port"),
        "security": getattr(mailbox, f"{prefix}_security"),
        "username": getattr(mailbox, f"{prefix}_username"),
    }


class FolderOutput(serializers.Serializer):
    """The sync ledger of one folder: what the server holds, what was imported."""

    role = serializers.CharField()
    name = serializers.CharField()
    server_count = serializers.IntegerField(allow_null=True)
    imported_count = serializers.IntegerField()
    missing_count = serializers.IntegerField()
    unparsed_count = serializers.IntegerField()
    resync_count = serializers.IntegerField()
    backfill_from = serializers.DateTimeField(
        allow_null=True, help_text="Where this folder's import window starts."
    )
    alert = serializers.CharField()
    last_synced_at = serializers.DateTimeField(allow_null=True)
    last_reconciled_at = serializers.DateTimeField(allow_null=True)


class SendLimitsOutput(serializers.Serializer):
    per_day = serializers.IntegerField(help_text="Emails in a rolling 24 hours.")
    per_minute = serializers.IntegerField(help_text="Emails in a rolling 60 seconds.")
    per_day_is_default = serializers.BooleanField(help_text="The provider's default.")
    per_minute_is_default = serializers.BooleanField(help_text="The provider's default.")


class MailboxOutput(serializers.ModelSerializer):
    """Secrets are never returned: no field here can carry one."""

    folders = FolderOutput(many=True, read_only=True)

    owner_name = serializers.SerializerMethodField()
    inbox = serializers.SerializerMethodField()
    inbox_name = serializers.SerializerMethodField()
    sync = SyncOutput(source="*")
    imap = serializers.SerializerMethodField()
    smtp = serializers.SerializerMethodField()
    send_limits = serializers.SerializerMethodField()
    backfill_days = serializers.IntegerField(
        allow_null=True,
        read_only=True,
        help_text="The import window in days (0: only new mail; null: all mail).",
    )

    class Meta:
        model = Mailbox
        fields = [
            "id",
            "address",
            "canonical_address",
            "kind",
            "provider",
            "owner",
            "owner_name",
            "inbox",
            "inbox_name",
            "status",
            "last_error",
            "sync",
            "backfill_days",
            "folders",
            "imap",
            "smtp",
            "send_limits",
            "created_at",
            "disconnected_at",
        ]

    def get_owner_name(self, mailbox: Mailbox) -> str | None:
        owner = mailbox.owner
        return owner.display_name if owner is not None else None

    @extend_schema_field(OpenApiTypes.UUID)
    def get_inbox(self, mailbox: Mailbox) -> str | None:
        inbox = _inbox_of(mailbox)
        return str(inbox.pk) if inbox else None

    def get_inbox_name(self, mailbox: Mailbox) -> str | None:
        inbox = _inbox_of(mailbox)
        return inbox.name if inbox else None

    @extend_schema_field(ServerOutput(allow_null=True))
    def get_imap(self, mailbox: Mailbox) -> dict | None:
        return _server_of(mailbox, "imap")

    @extend_schema_field(ServerOutput(allow_null=True))
    def get_smtp(self, mailbox: Mailbox) -> dict | None:
        return _server_of(mailbox, "smtp")

    @extend_schema_field(SendLimitsOutput(allow_null=True))
    def get_send_limits(self, mailbox: Mailbox) -> dict | None:
        """The effective limits of a personal email; null for a team email."""
        limits = limits_of(mailbox)
        return limits.as_dict() if limits is not None else None


class ServerInput(serializers.Serializer):
    host = serializers.CharField(max_length=255)
    port = serializers.IntegerField(min_value=1, max_value=65535)
    security = serializers.ChoiceField(choices=Security.choices)
    username = serializers.CharField(max_length=320)
    password = serializers.CharField(max_length=1024, trim_whitespace=False, write_only=True)


class ServerPatch(ServerInput):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for field in self.fields.values():
            field.required = False


class BackfillDays(serializers.ChoiceField):
    """How much history to import: 0 (only new mail), 30, 90, 365 days, or null (all)."""

    def __init__(self, **kwargs):
        super().__init__(
            choices=[
                (days, BACKFILL_LABELS[days]) for days in BACKFILL_DAYS_CHOICES if days is not None
            ],
            allow_null=True,
            help_text="Days of history to import: 0 (only new mail), 30, 90, 365, "
            "or null (all mail).",
            **kwargs,
        )

    def to_internal_value(self, data):
        if isinstance(data, bool):  # True would pass as 1, False as 0
            self.fail("invalid_choice", input=data)
        return super().to_internal_value(data)


class MailboxCreateInput(serializers.Serializer):
    address = serializers.CharField(max_length=320)
    kind = serializers.ChoiceField(choices=MailboxKind.choices)
    provider = serializers.ChoiceField(choices=Provider.choices, default=Provider.IMAP)
    imap = ServerInput(required=False)
    smtp = ServerInput(required=False)
    acknowledge_team_visibility = serializers.BooleanField(default=False)
    inbox = serializers.UUIDField(required=False, allow_null=True)
    backfill_days = BackfillDays(default=DEFAULT_BACKFILL_DAYS)


class ImportHistoryInput(serializers.Serializer):
    backfill_days = BackfillDays()


class SendLimitsInput(serializers.Serializer):
    """Admins; null resets a limit to the provider's default, a limit left out stays."""

    per_day = serializers.IntegerField(
        min_value=1, max_value=send_limits.MAX_PER_DAY, allow_null=True, required=False
    )
    per_minute = serializers.IntegerField(
        min_value=1, max_value=send_limits.MAX_PER_MINUTE, allow_null=True, required=False
    )


class MailboxPatchInput(serializers.Serializer):
    imap = ServerPatch(required=False)
    smtp = ServerPatch(required=False)
    send_limits = SendLimitsInput(required=False)


class CheckInput(serializers.Serializer):
    address = serializers.CharField(max_length=320)
    kind = serializers.ChoiceField(choices=MailboxKind.choices)


class TransferInput(serializers.Serializer):
    user = serializers.UUIDField(required=False)
    inbox = serializers.UUIDField(required=False)
    acknowledge_team_visibility = serializers.BooleanField(default=False)


TestOutput = inline_serializer(
    "ConnectionTestOutput",
    {
        "ok": serializers.BooleanField(),
        "failed_step": serializers.CharField(allow_null=True),
        "steps": inline_serializer(
            "ConnectionTestStep",
            {
                "step": serializers.CharField(),
                "server": serializers.CharField(),
                "ok": serializers.BooleanField(),
                "detail": serializers.CharField(),
            },
            many=True,
        ),
    },
)


def _server_input(data: dict | None) -> services.ServerInput | None:
    return services.ServerInput(**data) if data is not None else None


class MailboxViewSet(
    AccountScopedMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """Connect (POST), inspect, change settings (PATCH), disconnect (DELETE)."""

    serializer_class = MailboxOutput
    queryset = Mailbox.objects.none()
    filterset_fields = ["kind", "status", "provider"]
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def scoped_queryset(self, user):
        return mailboxes_visible_to(user)

    @extend_schema(request=MailboxCreateInput, responses={201: MailboxOutput})
    def create(self, request):
        data = MailboxCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        inbox = None
        if values.get("inbox"):
            inbox = get_object_or_404(inboxes_visible_to(request.user), pk=values["inbox"])
        with failed_connection_tests_limited(request):
            mailbox = services.mailbox_connect(
                actor=request.user,
                address=values["address"],
                kind=values["kind"],
                provider=values["provider"],
                imap=_server_input(values.get("imap")),
                smtp=_server_input(values.get("smtp")),
                acknowledge_team_visibility=values["acknowledge_team_visibility"],
                inbox=inbox,
                ip=client_ip(request),
                backfill_days=values["backfill_days"],
            )
        return Response(MailboxOutput(mailbox).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=MailboxPatchInput, responses=MailboxOutput)
    def partial_update(self, request, pk=None):
        data = MailboxPatchInput(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        mailbox = self.get_object()
        limits = values.get("send_limits")
        if limits is not None:
            # Refused (403 for a member) before anything else is changed.
            send_limits.check_may_set_send_limits(request.user, mailbox, ip=client_ip(request))
        if "imap" in values or "smtp" in values or limits is None:
            with failed_connection_tests_limited(request):
                mailbox = services.mailbox_update(
                    actor=request.user,
                    mailbox=mailbox,
                    ip=client_ip(request),
                    imap=values.get("imap"),
                    smtp=values.get("smtp"),
                )
        if limits is not None:
            mailbox = send_limits.mailbox_set_send_limits(
                actor=request.user, mailbox=mailbox, ip=client_ip(request), **limits
            )
        return Response(MailboxOutput(mailbox).data)

    @extend_schema(request=None, responses=MailboxOutput)
    def destroy(self, request, pk=None):
        mailbox = services.mailbox_disconnect(
            actor=request.user, mailbox=self.get_object(), ip=client_ip(request)
        )
        return Response(MailboxOutput(mailbox).data)

    @extend_schema(
        request=CheckInput,
        responses=inline_serializer(
            "AvailabilityOutput",
            {
                "available": serializers.BooleanField(),
                "conflict": serializers.JSONField(allow_null=True),
                "detail": serializers.CharField(),
            },
        ),
    )
    @action(detail=False, methods=["post"])
    def check(self, request):
        data = CheckInput(data=request.data)
        data.is_valid(raise_exception=True)
        return Response(
            services.mailbox_check_availability(actor=request.user, **data.validated_data)
        )

    @extend_schema(request=None, responses=MailboxOutput)
    @action(detail=True, methods=["post"])
    def release(self, request, pk=None):
        mailbox = services.mailbox_release(
            actor=request.user, mailbox=self.get_object(), ip=client_ip(request)
        )
        return Response(MailboxOutput(mailbox).data)

    @extend_schema(request=TransferInput, responses=MailboxOutput)
    @action(detail=True, methods=["post"])
    def transfer(self, request, pk=None):
        data = TransferInput(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        to_user = inbox = None
        if values.get("user"):
            to_user = get_object_or_404(users_visible_to(request.user), pk=values["user"])
        if values.get("inbox"):
            inbox = get_object_or_404(inboxes_visible_to(request.user), pk=values["inbox"])
        mailbox = services.mailbox_transfer(
            actor=request.user,
            mailbox=self.get_object(),
            to_user=to_user,
            inbox=inbox,
            acknowledge_team_visibility=values["acknowledge_team_visibility"],
            ip=client_ip(request),
        )
        return Response(MailboxOutput(mailbox).data)

    @extend_schema(request=None, responses=MailboxOutput)
    @action(detail=True, methods=["post"])
    def resync(self, request, pk=None):
        """Admins: read every folder again (nothing is duplicated), then reconcile."""
        mailbox = self.get_object()
        sync.mailbox_resync(actor=request.user, mailbox=mailbox)
        sync.schedule_sync(mailbox.pk)
        mailbox.refresh_from_db()
        return Response(MailboxOutput(mailbox).data)

    @extend_schema(request=ImportHistoryInput, responses=MailboxOutput)
    @action(detail=True, methods=["post"], url_path="import-history")
    def import_history(self, request, pk=None):
        """Import older mail: a larger window (or null, all mail), brought in quietly by
        the next sync; nothing stored is imported again, and a smaller window is 400."""
        mailbox = self.get_object()
        data = ImportHistoryInput(data=request.data)
        data.is_valid(raise_exception=True)
        history.mailbox_import_history(
            actor=request.user,
            mailbox=mailbox,
            backfill_days=data.validated_data["backfill_days"],
            ip=client_ip(request),
        )
        return Response(MailboxOutput(self.get_object()).data)

    @extend_schema(request=None, responses={200: TestOutput})
    @action(detail=True, methods=["post"])
    def test(self, request, pk=None):
        mailbox = self.get_object()
        with failed_connection_tests_limited(request):
            result = services.mailbox_test(
                actor=request.user, mailbox=mailbox, ip=client_ip(request)
            )
            services.raise_if_failed(result)
        return Response(result.as_dict())


class AddressReleaseInput(serializers.Serializer):
    address = serializers.CharField(max_length=320)


class ReleasedHoldOutput(serializers.Serializer):
    held_as = serializers.CharField()
    mailbox = serializers.UUIDField(required=False)


class UserAddressReleaseView(APIView):
    """``POST /api/v1/users/{id}/release/`` (admins, R7): free every hold a deactivated
    user has on ``address``, their personal mailbox and the meetings tool alike."""

    @extend_schema(
        request=AddressReleaseInput,
        responses=inline_serializer(
            "AddressReleaseOutput",
            {
                "address": serializers.CharField(),
                "user": serializers.UUIDField(),
                "released": ReleasedHoldOutput(many=True),
            },
        ),
    )
    def post(self, request: Request, pk: UUID) -> Response:
        actor = api_user(request)
        user = get_object_or_404(users_visible_to(actor), pk=pk)
        data = AddressReleaseInput(data=request.data)
        data.is_valid(raise_exception=True)
        address = data.validated_data["address"]
        released = releases.user_address_release(
            actor=actor, user=user, address=address, ip=client_ip(request)
        )
        return Response({"address": address, "user": str(user.pk), "released": released})
