"""Show original: the stored bytes of a message exactly as received, to anyone who
may read it (inboxes/access.py), 404 to everyone else.

The API answers ``message/rfc822``. The web route (the conversation view's and the
contact timeline's "Show original") answers ``text/plain`` (or an ``.eml`` download
with ``?download=1``), never anything a browser would render as HTML.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.views import APIView

from accounts.auth import api_user
from core.errors import NotFoundError
from inboxes.access import readable_message
from inboxes.models import Message


class RawMessageRenderer(BaseRenderer):
    """Lets a client ask for ``Accept: message/rfc822``; errors still go as JSON."""

    media_type = "message/rfc822"
    format = "eml"
    charset = None

    def render(
        self, data: Any, accepted_media_type: Any = None, renderer_context: Any = None
    ) -> Any:
        return data if isinstance(data, bytes) else JSONRenderer().render(data)


def raw_bytes(message: Message) -> bytes:
    """The stored original; 404 when its file is gone."""
    if not message.raw.name:
        raise Http404("The original of this message was not kept.")
    try:
        with message.raw.open("rb") as stored:
            data: bytes = stored.read()
    except (FileNotFoundError, ValueError):
        raise Http404("The original of this message is gone.") from None
    return data


def _locked_down(response: HttpResponse) -> HttpResponse:
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response["Cache-Control"] = "private, no-store"
    return response


class MessageRawView(APIView):
    renderer_classes = [JSONRenderer, RawMessageRenderer]

    @extend_schema(
        operation_id="messages_raw",
        summary="The original bytes of a message, exactly as received",
        responses={
            (200, "message/rfc822"): OpenApiResponse(OpenApiTypes.BINARY),
            404: OpenApiResponse(description="Unknown, another account's, or not readable"),
        },
    )
    def get(self, request: Request, pk: UUID) -> HttpResponse:
        message = readable_message(api_user(request), pk)
        if message is None:
            raise NotFoundError("Unknown message.")
        response = HttpResponse(raw_bytes(message), content_type="message/rfc822")
        response["Content-Disposition"] = f'attachment; filename="{message.pk}.eml"'
        return _locked_down(response)


@require_GET
@login_required
def message_raw(request: HttpRequest, pk: UUID) -> HttpResponse:
    message = readable_message(request.user, pk)
    if message is None:
        raise Http404("Unknown message.")
    data = raw_bytes(message)
    if request.GET.get("download"):
        response = HttpResponse(data, content_type="message/rfc822")
        response["Content-Disposition"] = f'attachment; filename="{message.pk}.eml"'
    else:
        # Mail is mostly ASCII; 8-bit bytes in another charset show as the browser
        # decodes them, and the download keeps them exact.
        response = HttpResponse(data, content_type="text/plain; charset=utf-8")
        response["Content-Disposition"] = f'inline; filename="{message.pk}.txt"'
    return _locked_down(response)
