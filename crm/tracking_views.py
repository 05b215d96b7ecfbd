"""The tracking endpoints (no login; DESIGN.md 4 "tracking"): ``/t/o/<token>`` answers
a 1x1 GIF whatever the token, ``/t/c/<token>`` redirects only to the link the token
names. What a fetch records is decided in crm/tracking_events.py."""

from __future__ import annotations

import base64

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.utils import timezone
from django.views.decorators.http import require_safe

from crm.tracking_events import Fetch, tracking_click, tracking_open

# A transparent 1x1 GIF.
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")


def _fetch(request: HttpRequest) -> Fetch:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        user = None
    return Fetch(
        at=timezone.now(),
        # The client address as the rest of the app reads it (a proxy header when the
        # deployment says so: its first entry is the client).
        ip=(request.META.get(settings.RATELIMIT_IP_META_KEY) or "").split(",")[0].strip() or None,
        user_agent=request.META.get("HTTP_USER_AGENT", ""),
        user_id=user.pk if user is not None else None,
        account_id=getattr(user, "account_id", None),
    )


def _not_kept(response: HttpResponse) -> HttpResponse:
    # Every fetch must reach us to be counted, and the token must not leak onward.
    response["Cache-Control"] = "no-store, no-cache, must-revalidate, max-age=0, private"
    response["Referrer-Policy"] = "no-referrer"
    response["X-Robots-Tag"] = "noindex, nofollow"
    return response


@require_safe
def tracking_open_view(request: HttpRequest, token: str) -> HttpResponse:
    # A HEAD is a checker asking whether the image exists: answered, never counted.
    if request.method == "GET":
        tracking_open(token, _fetch(request))
    return _not_kept(HttpResponse(PIXEL, content_type="image/gif"))


@require_safe
def tracking_click_view(request: HttpRequest, token: str) -> HttpResponse:
    # A HEAD is a link checker's: it learns where the link goes (only the email's own
    # link), and counts nothing.
    url = tracking_click(token, _fetch(request), count=request.method == "GET")
    if url is None:
        raise Http404("No such link.")
    response = HttpResponseRedirect(url)
    return _not_kept(response)
