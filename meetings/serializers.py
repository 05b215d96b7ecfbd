"""Input and output shapes of the meetings API (DESIGN.md section 4): inputs check
types, meetings/links.py and meetings/bookings.py check meaning."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from meetings.models import Booking, SchedulingLink


class QuestionSerializer(serializers.Serializer):
    label = serializers.CharField(max_length=200)  # type: ignore[assignment]
    required = serializers.BooleanField(default=False)  # type: ignore[assignment]


_WINDOW = serializers.ListField(
    child=serializers.CharField(max_length=5), min_length=2, max_length=2
)


class LinkOutput(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    questions = QuestionSerializer(many=True)
    availability = serializers.DictField(
        child=serializers.ListField(child=serializers.ListField(child=serializers.CharField()))
    )
    durations = serializers.ListField(child=serializers.IntegerField())

    class Meta:
        model = SchedulingLink
        fields = [
            "id",
            "name",
            "slug",
            "url",
            "durations",
            "timezone",
            "availability",
            "buffer_before",
            "buffer_after",
            "min_notice_minutes",
            "days_ahead",
            "questions",
            "is_active",
            "created_at",
        ]

    def get_url(self, link: SchedulingLink) -> str:
        return f"{settings.PUBLIC_URL}/meet/{link.slug}/"


class LinkInput(serializers.Serializer):
    """POST needs ``name``; PATCH takes any subset."""

    name = serializers.CharField(max_length=200, required=False)
    slug = serializers.CharField(max_length=80, required=False)
    durations = serializers.ListField(
        child=serializers.IntegerField(), required=False, max_length=10
    )
    timezone = serializers.CharField(max_length=64, required=False)
    availability = serializers.DictField(
        child=serializers.ListField(child=_WINDOW, max_length=12), required=False
    )
    buffer_before = serializers.IntegerField(required=False)
    buffer_after = serializers.IntegerField(required=False)
    min_notice_minutes = serializers.IntegerField(required=False)
    days_ahead = serializers.IntegerField(required=False)
    questions = QuestionSerializer(many=True, required=False)
    is_active = serializers.BooleanField(required=False)

    def service_data(self) -> dict[str, Any]:
        data = dict(self.validated_data)
        if "questions" in data:
            data["questions"] = [dict(q) for q in data["questions"]]
        if "availability" in data:
            data["availability"] = {
                day: [list(w) for w in windows] for day, windows in data["availability"].items()
            }
        return data


class SlotSerializer(serializers.Serializer):
    start = serializers.CharField(help_text="ISO 8601 with the visitor's UTC offset")
    end = serializers.CharField(help_text="ISO 8601 with the visitor's UTC offset")


class SlotsOutput(serializers.Serializer):
    timezone = serializers.CharField()
    slots = SlotSerializer(many=True)


class SlotsQuery(serializers.Serializer):
    start = serializers.DateField(
        required=False, input_formats=["%Y-%m-%d"], help_text="YYYY-MM-DD in tz; today there"
    )
    days = serializers.IntegerField(required=False, min_value=1, default=7)
    tz = serializers.CharField(required=False, max_length=64, default="UTC")
    duration = serializers.IntegerField(
        required=False, min_value=1, max_value=24 * 60, help_text="minutes; the link's first"
    )

    def validate_days(self, value: int) -> int:
        limit = int(settings.MEETINGS_SLOTS_MAX_DAYS)
        if value > limit:
            raise serializers.ValidationError(f"At most {limit} days.")
        return value


class PublicBookingInput(serializers.Serializer):
    start = serializers.DateTimeField(help_text="ISO 8601 with a UTC offset")
    duration = serializers.IntegerField(
        required=False, min_value=1, max_value=24 * 60, help_text="minutes; the link's first"
    )
    name = serializers.CharField(max_length=200)
    email = serializers.CharField(max_length=320)
    answers = serializers.DictField(
        child=serializers.CharField(allow_blank=True, max_length=2000), required=False, default=dict
    )
    timezone = serializers.CharField(max_length=64, required=False, default="UTC")


class PublicBookingOutput(serializers.Serializer):
    id = serializers.UUIDField()
    start = serializers.CharField()
    end = serializers.CharField()
    cancel_url = serializers.URLField()
    reschedule_url = serializers.URLField()


class AlternativesError(serializers.Serializer):
    code = serializers.CharField()
    detail = serializers.CharField()
    alternatives = SlotSerializer(many=True)


class BookingOutput(serializers.ModelSerializer):
    link = serializers.SerializerMethodField()

    class Meta:
        model = Booking
        fields = [
            "id",
            "link",
            "start",
            "end",
            "name",
            "email",
            "answers",
            "timezone",
            "state",
            "contact",
            "sequence",
            "created_at",
            "cancelled_at",
            "cancel_reason",
        ]

    @extend_schema_field(
        {
            "type": "object",
            "properties": {"id": {"type": "string"}, "name": {"type": "string"}},
        }
    )
    def get_link(self, booking: Booking) -> dict[str, str]:
        return {"id": str(booking.link_id), "name": booking.link.name}


class BookingCancelInput(serializers.Serializer):
    reason = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")


def in_zone(moment: datetime, tz: Any) -> str:
    return moment.astimezone(tz).isoformat()
