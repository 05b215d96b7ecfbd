"""Response headers that every page and API answer needs, set in one place."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponseBase

# A limiter that does not say how long it holds a client back: ask it to wait a minute.
DEFAULT_RETRY_AFTER = 60
_RETRY_AFTER_ATTR = "postkamer_retry_after"

_GetResponse = Callable[[HttpRequest], HttpResponseBase]


def note_retry_after(request: Any, seconds: float) -> None:
    """Remember how long a refused client should wait; sent as ``Retry-After``.

    ``request`` may be DRF's wrapper: the note goes on the Django request
    underneath, the one the middleware sees.
    """
    target = getattr(request, "_request", request)
    setattr(target, _RETRY_AFTER_ATTR, max(1, math.ceil(seconds)))


class RetryAfterMiddleware:
    """Every 429 says when to come back (DESIGN.md section 4, ``rate_limited``)."""

    def __init__(self, get_response: _GetResponse) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        if response.status_code == 429 and not response.has_header("Retry-After"):
            seconds = getattr(request, _RETRY_AFTER_ATTR, DEFAULT_RETRY_AFTER)
            response["Retry-After"] = str(seconds)
        return response


class NoStoreMiddleware:
    """Pages for a signed-in user and every API answer are never kept by a cache.

    A shared proxy or the browser's history must not hand one person's mail,
    contacts or tokens to the next. A view that sets its own ``Cache-Control``
    (a login page, a downloadable attachment) keeps it.
    """

    def __init__(self, get_response: _GetResponse) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        if not response.has_header("Cache-Control") and (
            request.path.startswith("/api/") or _signed_in(request)
        ):
            response["Cache-Control"] = "no-store"
        return response


def _signed_in(request: HttpRequest) -> bool:
    # Without a session cookie nobody is signed in; checking first keeps the
    # session untouched (and free of a Vary: Cookie) on public pages.
    if settings.SESSION_COOKIE_NAME not in request.COOKIES:
        return False
    user = getattr(request, "user", None)
    return bool(user is not None and user.is_authenticated)
