"""The API of one-to-one email and the R10 preferences (DESIGN.md 4): send to a
contact, read one email, read and change one's preferences. Thin: validate, call a
service, present."""

from __future__ import annotations

from typing import Any

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.auth import api_user
from crm.compose import FONT_SIZE_MAX, FONT_SIZE_MIN
from crm.email_selectors import contacts_of_account, emails_visible_to
from crm.models import Preferences
from crm.preferences import preferences_for, preferences_update
from crm.presenters import email_data
from crm.sending import email_queue
from crm.serializers import EmailOutput
from inboxes.models import Mailbox

# --- Shapes -------------------------------------------------------------------------------------


class EmailSendInput(serializers.Serializer):
    mailbox = serializers.UUIDField()
    subject = serializers.CharField(max_length=998)
    text = serializers.CharField(max_length=200_000, required=False, allow_blank=True, default="")
    html = serializers.CharField(max_length=1_000_000, required=False, allow_blank=True, default="")
    log = serializers.BooleanField(required=False, allow_null=True, default=None)
    track_opens = serializers.BooleanField(required=False, allow_null=True, default=None)
    track_clicks = serializers.BooleanField(required=False, allow_null=True, default=None)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not attrs["text"].strip() and not attrs["html"].strip():
            raise serializers.ValidationError({"text": ["Give the text or the HTML (or both)."]})
        return attrs


class FontSerializer(serializers.Serializer):
    family = serializers.CharField(max_length=64)
    size = serializers.IntegerField(min_value=FONT_SIZE_MIN, max_value=FONT_SIZE_MAX)


class PreferencesSerializer(serializers.Serializer):
    """Output, and the PUT's input: what is left out stays as it is."""

    log_sent_email = serializers.BooleanField(required=False)
    track_opens = serializers.BooleanField(required=False)
    track_clicks = serializers.BooleanField(required=False)
    never_log = serializers.ListField(
        child=serializers.CharField(max_length=320, allow_blank=True),
        required=False,
        max_length=1000,
        help_text='Addresses ("ann@x.com") and domains ("@x.com"), stored canonical.',
    )
    font = FontSerializer(required=False)


def preferences_data(preferences: Preferences) -> dict[str, Any]:
    return {
        "log_sent_email": preferences.log_sent_email,
        "track_opens": preferences.track_opens,
        "track_clicks": preferences.track_clicks,
        "never_log": list(preferences.never_log),
        "font": {"family": preferences.font_family, "size": preferences.font_size},
    }


# --- Views --------------------------------------------------------------------------------------


class ContactEmailsView(APIView):
    """``POST /contacts/{id}/emails/``: a one-to-one email from one of the caller's own
    personal mailboxes."""

    @extend_schema(request=EmailSendInput, responses={201: EmailOutput})
    def post(self, request: Request, pk: str) -> Response:
        user = api_user(request)
        contact = get_object_or_404(contacts_of_account(user), pk=pk)
        data = EmailSendInput(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        # Any mailbox of the account: check_send_mailbox tells a team mailbox (invalid)
        # from someone else's (404).
        mailbox = get_object_or_404(
            Mailbox.objects.filter(account_id=user.account_id), pk=values["mailbox"]
        )
        email = email_queue(
            sender=user,
            contact=contact,
            mailbox=mailbox,
            subject=values["subject"],
            text=values["text"],
            html=values["html"],
            log=values["log"],
            track_opens=values["track_opens"],
            track_clicks=values["track_clicks"],
        )
        email = emails_visible_to(user).get(pk=email.pk)
        return Response(email_data(email), status=status.HTTP_201_CREATED)


class EmailDetailView(APIView):
    """``GET /emails/{id}/``: a logged email of the caller's account, or one they sent."""

    @extend_schema(responses=EmailOutput)
    def get(self, request: Request, pk: str) -> Response:
        email = get_object_or_404(emails_visible_to(api_user(request)), pk=pk)
        return Response(email_data(email))


class PreferencesView(APIView):
    """``GET, PUT /me/preferences/``: R10, the caller's log & track preferences,
    never-log list and default font."""

    @extend_schema(responses=PreferencesSerializer)
    def get(self, request: Request) -> Response:
        return Response(preferences_data(preferences_for(api_user(request))))

    @extend_schema(request=PreferencesSerializer, responses=PreferencesSerializer)
    def put(self, request: Request) -> Response:
        data = PreferencesSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        font = values.get("font") or {}
        preferences = preferences_update(
            user=api_user(request),
            log_sent_email=values.get("log_sent_email"),
            track_opens=values.get("track_opens"),
            track_clicks=values.get("track_clicks"),
            never_log=values.get("never_log"),
            font_family=font.get("family"),
            font_size=font.get("size"),
        )
        return Response(preferences_data(preferences))
