"""``/hooks/microsoft/``: where Microsoft Graph posts its notifications.

Graph calls it without a session or a CSRF token, so the view is CSRF exempt and
trusts nothing it is sent: ``inboxes.push.microsoft.graph_notifications_receive``
checks each notification's subscription and clientState and only queues work.
Two kinds of POST arrive:

- the validation handshake (``?validationToken=...``) when a subscription is made:
  the token goes back as text/plain with 200, at once (Graph waits 10 s at most);
- notifications, ``{"value": [...]}``: answered 202 as soon as the work is queued.
"""

from __future__ import annotations

import json
import logging

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from inboxes.push.microsoft import MalformedNotifications, graph_notifications_receive

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024  # Graph batches notifications; a batch is far smaller
MAX_TOKEN_CHARS = 2048


def _error(status: int, code: str, detail: str) -> JsonResponse:
    return JsonResponse({"code": code, "detail": detail}, status=status)


@csrf_exempt
def microsoft_hook(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        response = _error(405, "method_not_allowed", "Only POST is accepted here.")
        response["Allow"] = "POST"
        return response
    token = request.GET.get("validationToken")
    if token is not None:
        if len(token) > MAX_TOKEN_CHARS:
            return _error(400, "invalid", "The validation token is too long.")
        answer = HttpResponse(token, content_type="text/plain; charset=utf-8")
        answer["X-Content-Type-Options"] = "nosniff"
        return answer
    try:
        length = int(request.headers.get("Content-Length") or 0)
    except ValueError:
        length = -1
    if length < 0:
        return _error(400, "invalid", "The Content-Length header is not a number.")
    if length > MAX_BODY_BYTES:
        return _error(413, "too_large", "The notification body is too large.")
    body = request.read(MAX_BODY_BYTES + 1)
    if len(body) > MAX_BODY_BYTES:
        return _error(413, "too_large", "The notification body is too large.")
    try:
        payload = json.loads(body)
        received = graph_notifications_receive(payload)
    except (ValueError, MalformedNotifications) as exc:  # JSONDecodeError, bad UTF-8 too
        return _error(400, "invalid", f"Not a Microsoft Graph notification: {exc}")
    log.info(
        "Graph hook: %d change(s), lifecycle %s, %d ignored",
        received.changes,
        received.lifecycle,
        received.ignored,
    )
    return HttpResponse(status=202)
