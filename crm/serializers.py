"""The CRM's REST shapes (DESIGN.md 4 "CRM, meetings, notifications"): input and
output serializers, so that drf-spectacular describes each one."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field, inline_serializer
from rest_framework import serializers

from crm.models import Contact, Note, TimelineEvent, TimelineType
from crm.presenters import email_data


class ContactOutput(serializers.ModelSerializer[Contact]):
    owner_name = serializers.SerializerMethodField()

    class Meta:
        model = Contact
        fields = [
            "id",
            "email",
            "name",
            "company",
            "owner",
            "owner_name",
            "created_at",
            "last_activity_at",
            "bounced_at",
        ]

    def get_owner_name(self, contact: Contact) -> str | None:
        return contact.owner.display_name if contact.owner else None


class ContactInput(serializers.Serializer[Any]):
    email = serializers.CharField(max_length=320)
    name = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    company = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    owner = serializers.UUIDField(required=False, allow_null=True, default=None)


class ContactPatchInput(serializers.Serializer[Any]):
    email = serializers.CharField(max_length=320, required=False)
    name = serializers.CharField(max_length=200, required=False, allow_blank=True)
    company = serializers.CharField(max_length=200, required=False, allow_blank=True)
    owner = serializers.UUIDField(required=False, allow_null=True)


class ImportQuery(serializers.Serializer[Any]):
    dry_run = serializers.BooleanField(required=False, default=False)


class ImportInput(serializers.Serializer[Any]):
    file = serializers.FileField(allow_empty_file=True)


class ImportErrorOutput(serializers.Serializer[Any]):
    row = serializers.IntegerField()
    detail = serializers.CharField()


# ``errors`` is a Serializer's own attribute: the shape is declared, not a class.
ImportOutput = inline_serializer(
    "ContactImportOutput",
    {
        "created": serializers.IntegerField(),
        "updated": serializers.IntegerField(),
        "unchanged": serializers.IntegerField(),
        "errors": ImportErrorOutput(many=True),
        "dry_run": serializers.BooleanField(),
    },
)


class EmailPartyOutput(serializers.Serializer[Any]):
    name = serializers.CharField()
    address = serializers.CharField()


class EmailBounceOutput(serializers.Serializer[Any]):
    address = serializers.CharField()
    status = serializers.CharField()
    diagnostic = serializers.CharField()
    at = serializers.DateTimeField()


class EmailDeliveryOutput(serializers.Serializer[Any]):
    state = serializers.CharField()
    detail = serializers.CharField()
    scheduled_for = serializers.DateTimeField(allow_null=True)
    bounces = EmailBounceOutput(many=True)


class TrackingOutput(serializers.Serializer[Any]):
    opens = serializers.IntegerField()
    clicks = serializers.IntegerField()
    machine_opens = serializers.IntegerField()


class EmailOutput(serializers.Serializer[Any]):
    """What crm.presenters.email_data answers (DESIGN.md 4, "email")."""

    id = serializers.UUIDField()
    contact = serializers.UUIDField()
    direction = serializers.CharField()
    mailbox = serializers.UUIDField(allow_null=True)
    to = EmailPartyOutput(many=True)
    cc = EmailPartyOutput(many=True)
    subject = serializers.CharField()
    text = serializers.CharField()
    html = serializers.CharField()
    sent_at = serializers.DateTimeField()
    message_id = serializers.CharField()
    in_reply_to = serializers.CharField()
    logged = serializers.BooleanField()
    raw_url = serializers.CharField(help_text="Show original: the stored bytes.")
    delivery = EmailDeliveryOutput(allow_null=True)
    tracking = TrackingOutput()

    def get_fields(self) -> dict[str, serializers.Field[Any, Any, Any, Any]]:
        fields = super().get_fields()
        fields["from"] = EmailPartyOutput()  # a Python keyword: not a class attribute
        return fields


class TimelineEventOutput(serializers.ModelSerializer[TimelineEvent]):
    type = serializers.ChoiceField(choices=TimelineType.choices)
    email = serializers.SerializerMethodField()
    detail = serializers.DictField()

    class Meta:
        model = TimelineEvent
        fields = ["id", "type", "at", "email", "detail"]

    @extend_schema_field(EmailOutput(allow_null=True))
    def get_email(self, event: TimelineEvent) -> dict[str, Any] | None:
        if event.email is None or event.type not in ("email", "open", "click"):
            return None
        return email_data(event.email)


class ContactNoteOutput(serializers.ModelSerializer[Note]):
    author_name = serializers.SerializerMethodField()

    class Meta:
        model = Note
        fields = ["id", "contact", "author", "author_name", "text", "created_at"]

    def get_author_name(self, note: Note) -> str:
        return note.author.display_name if note.author else ""


class ContactNoteInput(serializers.Serializer[Any]):
    text = serializers.CharField(max_length=50_000)
