from __future__ import annotations

import django_filters
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema, extend_schema_field, inline_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.response import Response

from accounts.models import Team
from accounts.selectors import teams_by_ids, teams_visible_to, users_by_ids, users_visible_to
from conversations import handling, outbound, services, snooze
from conversations.metrics import agent_metrics, conversation_metrics
from conversations.models import (
    Conversation,
    ConversationEvent,
    ConversationStatus,
    Note,
    RoutingMode,
    RoutingRule,
)
from conversations.outbound import MAX_RECIPIENTS
from conversations.selectors import (
    conversation_detail,
    conversation_list,
    inbox_conversations_visible_to,
    routing_rule_of,
    search_conversations,
)
from core.api import AccountScopedMixin, CursorPagination, IsAccountAdmin, client_ip
from inboxes.delivery import bounce_data, delivery_of
from inboxes.models import Inbox, Message
from inboxes.selectors import inboxes_visible_to, mailboxes_visible_to


class InboxOutput(serializers.ModelSerializer):
    mailbox_address = serializers.CharField(source="mailbox.address", default=None)
    teams: serializers.PrimaryKeyRelatedField[Team] = serializers.PrimaryKeyRelatedField(
        source="visible_to_teams", many=True, read_only=True
    )

    class Meta:
        model = Inbox
        fields = [
            "id",
            "name",
            "mailbox",
            "mailbox_address",
            "from_name",
            "signature",
            "restricted",
            "reopen_on_auto_reply",
            "assign_on_reply",
            "teams",
            "created_at",
        ]


class InboxCreateInput(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    from_name = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")


class InboxPatchInput(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False)
    from_name = serializers.CharField(max_length=200, required=False, allow_blank=True)
    signature = serializers.CharField(max_length=5000, required=False, allow_blank=True)
    restricted = serializers.BooleanField(required=False)
    reopen_on_auto_reply = serializers.BooleanField(required=False)
    assign_on_reply = serializers.BooleanField(required=False)
    teams = serializers.ListField(child=serializers.UUIDField(), required=False)
    mailbox = serializers.UUIDField(required=False, allow_null=True)


class MetricsQuery(serializers.Serializer):
    days = serializers.IntegerField(min_value=1, max_value=90, default=14)


class RoutingInput(serializers.Serializer):
    mode = serializers.ChoiceField(choices=RoutingMode.choices)
    users = serializers.ListField(child=serializers.UUIDField(), required=False, default=list)
    team = serializers.UUIDField(required=False, allow_null=True)


RoutingOutput = inline_serializer(
    "RoutingOutput",
    {
        "mode": serializers.CharField(),
        "users": serializers.ListField(child=serializers.UUIDField()),
        "team": serializers.UUIDField(allow_null=True),
        "last_assigned": serializers.UUIDField(allow_null=True),
    },
)
MetricsOutput = inline_serializer(
    "MetricsOutput",
    {
        "inbox": serializers.UUIDField(),
        "days": serializers.ListField(child=serializers.DateField()),
        "opened_per_day": serializers.ListField(child=serializers.IntegerField()),
        "closed_per_day": serializers.ListField(child=serializers.IntegerField()),
        "first_response": serializers.DictField(),
        "time_to_close": serializers.DictField(),
        "agents": serializers.ListField(child=serializers.DictField()),
    },
)


def _routing_data(rule: RoutingRule | None) -> dict:
    if rule is None:
        return {"mode": RoutingMode.NONE, "users": [], "team": None, "last_assigned": None}
    return {
        "mode": rule.mode,
        "users": [str(pk) for pk in rule.users.values_list("pk", flat=True)],
        "team": str(rule.team_id) if rule.team_id else None,
        "last_assigned": str(rule.last_assigned_id) if rule.last_assigned_id else None,
    }


class InboxViewSet(
    AccountScopedMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """Conversations inboxes: everyone reads them, admins change them."""

    serializer_class = InboxOutput
    queryset = Inbox.objects.none()
    http_method_names = ["get", "post", "put", "patch", "delete", "head", "options"]

    def scoped_queryset(self, user):
        return inboxes_visible_to(user)

    def get_permissions(self):
        if self.action in ("create", "partial_update", "destroy") or (
            self.action == "routing" and self.request.method == "PUT"
        ):
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
        if "teams" in changes:
            teams = list(teams_by_ids(request.user, changes["teams"]))
            if len(teams) != len(set(changes["teams"])):
                raise NotFound()
            changes["teams"] = teams
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

    @extend_schema(methods=["GET"], responses=RoutingOutput)
    @extend_schema(methods=["PUT"], request=RoutingInput, responses=RoutingOutput)
    @action(detail=True, methods=["get", "put"])
    def routing(self, request, pk=None):
        """R9: how new conversations of this inbox are assigned."""
        inbox = self.get_object()
        if request.method == "PUT":
            data = RoutingInput(data=request.data)
            data.is_valid(raise_exception=True)
            values = data.validated_data
            users = list(users_by_ids(request.user, values.get("users", [])))
            if len(users) != len(set(values.get("users", []))):
                raise NotFound()
            team = None
            if values.get("team"):
                team = get_object_or_404(teams_visible_to(request.user), pk=values["team"])
            # The service holds the API to every rule the Routing page is held to.
            services.routing_rule_set(
                actor=request.user, inbox=inbox, mode=values["mode"], users=users, team=team
            )
        return Response(_routing_data(routing_rule_of(inbox)))

    @extend_schema(parameters=[MetricsQuery], responses=MetricsOutput)
    @action(detail=True, methods=["get"])
    def metrics(self, request, pk=None):
        """Opened and closed per day, time to first response and to close; per agent too."""
        inbox = self.get_object()
        query = MetricsQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        days = query.validated_data["days"]
        conversations = inbox_conversations_visible_to(request.user, inbox)
        return Response(
            {
                "inbox": str(inbox.pk),
                **conversation_metrics(conversations, days=days),
                "agents": agent_metrics(conversations, days=days),
            }
        )


# --- Conversations -------------------------------------------------------------------------------


class PartyOutput(serializers.Serializer):
    name = serializers.CharField()
    address = serializers.CharField()


class AttachmentOutput(serializers.Serializer):
    id = serializers.UUIDField()
    filename = serializers.CharField()
    content_type = serializers.CharField()
    size = serializers.IntegerField()


class DeliveryBounceOutput(serializers.Serializer):
    address = serializers.CharField()
    status = serializers.CharField(help_text="The RFC 3463 code, e.g. 5.1.1.")
    diagnostic = serializers.CharField(help_text="In plain words.")
    at = serializers.DateTimeField()


class DeliveryOutput(serializers.Serializer):
    state = serializers.ChoiceField(
        choices=["queued", "sending", "sent", "failed", "unknown", "bounced"]
    )
    detail = serializers.CharField()
    scheduled_for = serializers.DateTimeField(allow_null=True)
    bounces = DeliveryBounceOutput(many=True)


class BounceRecipientOutput(serializers.Serializer):
    address = serializers.CharField()
    action = serializers.CharField(help_text="RFC 3464: failed, delayed, delivered...")
    status = serializers.CharField(help_text="The RFC 3463 code, e.g. 5.1.1.")
    diagnostic = serializers.CharField(help_text="In plain words.")


class BounceOutput(serializers.Serializer):
    original = serializers.UUIDField(
        allow_null=True, help_text="The outbound message this report is about, once tied."
    )
    recipients = BounceRecipientOutput(many=True)


class MessageOutput(serializers.ModelSerializer):
    """DESIGN.md 4: the message shape; html is sanitised at ingestion."""

    to = PartyOutput(many=True)
    cc = PartyOutput(many=True)
    attachments = AttachmentOutput(many=True)
    delivery = serializers.SerializerMethodField()
    bounce = serializers.SerializerMethodField()

    class Meta:
        model = Message
        fields = [
            "id",
            "direction",
            "kind",
            "to",
            "cc",
            "subject",
            "sent_at",
            "message_id",
            "text",
            "html",
            "has_remote_images",
            "attachments",
            "delivery",
            "bounce",
            "parse_error",
        ]

    def to_representation(self, message: Message) -> dict:
        data = super().to_representation(message)
        data["from"] = {"name": message.from_name, "address": message.from_address}
        return data

    @extend_schema_field(DeliveryOutput(allow_null=True))
    def get_delivery(self, message: Message) -> dict | None:
        return delivery_of(message)

    @extend_schema_field(BounceOutput(allow_null=True))
    def get_bounce(self, message: Message) -> dict | None:
        return bounce_data(message)


class NoteOutput(serializers.ModelSerializer):
    author_name = serializers.CharField(source="author.display_name")
    mentions = serializers.SerializerMethodField()

    class Meta:
        model = Note
        fields = ["id", "author", "author_name", "text", "mentions", "created_at"]

    def get_mentions(self, note: Note) -> list[str]:
        return [str(user.pk) for user in note.mentions.all()]


class EventOutput(serializers.ModelSerializer):
    class Meta:
        model = ConversationEvent
        fields = ["kind", "actor", "assignee", "detail", "created_at"]


class ConversationOutput(serializers.ModelSerializer):
    # The CRM contact with the customer's address (conversations/contact_links.py).
    contact = serializers.UUIDField(source="contact_id", read_only=True, allow_null=True)
    unread = serializers.SerializerMethodField()

    class Meta:
        model = Conversation
        fields = [
            "id",
            "inbox",
            "subject",
            "status",
            "assignee",
            "contact",
            "customer_address",
            "last_message_at",
            "message_count",
            "unread",
            "is_bounce",
            "snoozed_until",
            "created_at",
        ]

    def get_unread(self, conversation: Conversation) -> bool:
        return not getattr(conversation, "is_read", True)


class ConversationDetailOutput(ConversationOutput):
    messages = serializers.SerializerMethodField()
    notes = NoteOutput(many=True)
    events = EventOutput(many=True)

    class Meta(ConversationOutput.Meta):
        fields = [*ConversationOutput.Meta.fields, "messages", "notes", "events"]

    @extend_schema_field(MessageOutput(many=True))
    def get_messages(self, conversation: Conversation) -> list[dict]:
        # many=True makes a ListSerializer, whose data is a list; the stubs give a Serializer's.
        return MessageOutput(conversation.thread, many=True).data  # type: ignore[return-value]


class ConversationPatchInput(serializers.Serializer):
    assignee = serializers.UUIDField(required=False, allow_null=True)
    status = serializers.ChoiceField(choices=ConversationStatus.choices, required=False)
    # A moment: snoozed until then (conversations/snooze.py); null: back in the open lists.
    snoozed_until = serializers.DateTimeField(required=False, allow_null=True)


class ReplyInput(serializers.Serializer):
    text = serializers.CharField(max_length=200_000)
    html = serializers.CharField(max_length=1_000_000, required=False, allow_blank=True, default="")
    reply_all = serializers.BooleanField(default=False)
    cc = serializers.ListField(
        child=serializers.CharField(max_length=320), required=False, default=list, max_length=50
    )
    bcc = serializers.ListField(
        child=serializers.CharField(max_length=320), required=False, default=list, max_length=50
    )


class ConversationStartInput(serializers.Serializer):
    """New email: a conversation started from the inbox's team address."""

    inbox = serializers.UUIDField()
    to = serializers.ListField(
        child=serializers.CharField(max_length=320), allow_empty=False, max_length=MAX_RECIPIENTS
    )
    cc = serializers.ListField(
        child=serializers.CharField(max_length=320),
        required=False,
        default=list,
        max_length=MAX_RECIPIENTS,
    )
    subject = serializers.CharField(max_length=998)
    text = serializers.CharField(max_length=200_000)
    html = serializers.CharField(max_length=1_000_000, required=False, allow_blank=True, default="")


class NoteInput(serializers.Serializer):
    text = serializers.CharField(max_length=50_000)


class ConversationFilter(django_filters.FilterSet):
    inbox = django_filters.UUIDFilter(field_name="inbox_id")
    status = django_filters.ChoiceFilter(choices=ConversationStatus.choices)
    assignee = django_filters.UUIDFilter(field_name="assignee_id")
    unassigned = django_filters.BooleanFilter(field_name="assignee", lookup_expr="isnull")
    search = django_filters.CharFilter(method="filter_search")
    kind = django_filters.ChoiceFilter(
        choices=[("bounce", "bounce"), ("email", "email")],
        method="filter_kind",
        help_text="bounce: opened by a delivery report tied to no email (the Bounces list).",
    )

    class Meta:
        model = Conversation
        fields = ["inbox", "status", "assignee", "unassigned", "search", "kind"]

    def filter_kind(self, queryset, name, value):
        return queryset.filter(is_bounce=value == "bounce")

    def filter_search(self, queryset, name, value):
        return search_conversations(queryset, value)


class ConversationCursor(CursorPagination):
    ordering = ("-last_message_at", "-id")


class ConversationViewSet(
    AccountScopedMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """The conversations of the inboxes the user may see."""

    queryset = Conversation.objects.none()
    serializer_class = ConversationOutput
    filterset_class = ConversationFilter
    pagination_class = ConversationCursor
    http_method_names = ["get", "post", "patch", "head", "options"]

    def scoped_queryset(self, user):
        # The serializer renders the inbox and assignee as ids: no joined user rows
        # (with their password hashes) or inbox rows.
        return conversation_list(user).select_related(None)

    def get_serializer_class(self):
        return ConversationDetailOutput if self.action == "retrieve" else ConversationOutput

    @extend_schema(request=ConversationStartInput, responses={201: ConversationDetailOutput})
    def create(self, request):
        """New email: start a conversation from an inbox's team address (assigned to
        the caller). Anyone who may reply in the inbox may."""
        data = ConversationStartInput(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        inbox = Inbox.objects.filter(
            account_id=request.user.account_id, pk=values.pop("inbox")
        ).first()
        conversation = outbound.conversation_start(actor=request.user, inbox=inbox, **values)
        detail = ConversationDetailOutput(conversation_detail(conversation)).data
        return Response(detail, status=status.HTTP_201_CREATED)

    def retrieve(self, request, pk=None):
        conversation = self.get_object()
        conversation = conversation_detail(conversation)
        handling.conversation_mark_read(user=request.user, conversation=conversation)
        return Response(ConversationDetailOutput(conversation).data)

    @extend_schema(request=ConversationPatchInput, responses=ConversationDetailOutput)
    def partial_update(self, request, pk=None):
        conversation = self.get_object()
        data = ConversationPatchInput(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        if "assignee" in values:
            assignee = None
            if values["assignee"] is not None:
                assignee = get_object_or_404(users_visible_to(request.user), pk=values["assignee"])
            handling.conversation_assign(
                actor=request.user, conversation=conversation, assignee=assignee
            )
        if "status" in values:
            handling.conversation_set_status(
                actor=request.user, conversation=conversation, status=values["status"]
            )
        if "snoozed_until" in values:
            if values["snoozed_until"] is None:
                snooze.conversation_unsnooze(actor=request.user, conversation=conversation)
            else:
                snooze.conversation_snooze(
                    actor=request.user, conversation=conversation, until=values["snoozed_until"]
                )
        return Response(ConversationDetailOutput(conversation_detail(self.get_object())).data)

    @extend_schema(request=ReplyInput, responses={201: MessageOutput})
    @action(detail=True, methods=["post"])
    def replies(self, request, pk=None):
        conversation = self.get_object()
        data = ReplyInput(data=request.data)
        data.is_valid(raise_exception=True)
        message = handling.conversation_reply(
            actor=request.user, conversation=conversation, **data.validated_data
        )
        message = (
            Message.objects.select_related("outbox")
            .prefetch_related("attachments", "bounces")
            .get(pk=message.pk)
        )
        return Response(MessageOutput(message).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=NoteInput, responses={201: NoteOutput})
    @action(detail=True, methods=["post"])
    def notes(self, request, pk=None):
        conversation = self.get_object()
        data = NoteInput(data=request.data)
        data.is_valid(raise_exception=True)
        note = handling.note_create(
            actor=request.user, conversation=conversation, text=data.validated_data["text"]
        )
        return Response(NoteOutput(note).data, status=status.HTTP_201_CREATED)
