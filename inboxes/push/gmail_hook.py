"""``POST /hooks/gmail/``: Pub/Sub pushes Gmail's notifications here.

The request: ``Authorization: Bearer <OIDC token>`` (checked first, inboxes/push/oidc.py)
and the JSON envelope ``{"message": {"data": base64 of {"emailAddress", "historyId"},
"messageId", "publishTime"}, "subscription"}``. A push only says "look": the
mailboxes of that address sync, and the sync decides what is new from its own
cursor. So the answer to a replayed push (a ``messageId`` seen in the last
``SEEN_SECONDS``), to a push for an address nobody connected, and to a late or
duplicate one is a 2xx (Pub/Sub stops redelivering) that changes nothing more. A
push whose token is not our subscription's is refused (401/403, the API's error
shape) and nothing syncs.

Server to server: no session, no CSRF token; POST only; the body is bounded.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from inboxes.push.gmail import gmail_push_receive
from inboxes.push.oidc import PushRefused, bearer_token, verify_push_token

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024  # a Gmail notification is a few hundred bytes
SEEN_SECONDS = 600
_SEEN_PREFIX = "gmail-push-seen:"


def gmail_push_audience() -> str:
    """The audience the push subscription's tokens must name."""
    return settings.GMAIL_PUSH_AUDIENCE or f"{settings.PUBLIC_URL}/hooks/gmail/"


def _error(status: int, code: str, detail: str) -> JsonResponse:
    return JsonResponse({"code": code, "detail": detail}, status=status)


def _notification(body: bytes) -> tuple[str, str]:
    """(messageId, emailAddress) from the envelope; PushRefused(400) when unreadable."""
    try:
        envelope = json.loads(body)
        message = envelope["message"]
        message_id = str(message.get("messageId") or message.get("message_id") or "")
        data: Any = json.loads(base64.b64decode(message["data"], validate=False))
        address = str(data["emailAddress"]).strip()
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
        raise PushRefused(400, "invalid", "Not a Pub/Sub push of a Gmail notification.") from exc
    if not message_id or not address:
        raise PushRefused(400, "invalid", "The push has no messageId or emailAddress.")
    return message_id, address


@csrf_exempt
def gmail_push_hook(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        response = _error(405, "method_not_allowed", "Pub/Sub pushes are POSTed.")
        response["Allow"] = "POST"
        return response
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > MAX_BODY_BYTES:
        return _error(413, "too_large", f"A push is at most {MAX_BODY_BYTES} bytes.")
    try:
        verify_push_token(
            bearer_token(request.headers.get("Authorization", "")),
            audience=gmail_push_audience(),
            service_account=settings.GMAIL_PUSH_SERVICE_ACCOUNT,
        )
        message_id, address = _notification(request.body)
    except PushRefused as refused:
        log.warning("gmail push refused (%s): %s", refused.status, refused.detail)
        return _error(refused.status, refused.code, refused.detail)
    seen = _SEEN_PREFIX + message_id
    if not cache.add(seen, 1, timeout=SEEN_SECONDS):
        return HttpResponse(status=204)  # replayed: acknowledged, nothing more
    try:
        gmail_push_receive(address)
    except Exception:
        cache.delete(seen)  # let Pub/Sub's redelivery try again
        raise
    return HttpResponse(status=204)
