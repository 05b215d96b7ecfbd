"""Failed connection tests are limited per user and per IP (django-ratelimit).

Only failures count: an office full of people connecting mailboxes from one
NAT address succeeds without ever meeting the limit, while someone probing
hosts and ports through the connection test is stopped.

The limit is checked where a test would open a connection
(``connection_test_allowed``, called by ``services.connection_test_run``), not on
entering ``failed_connection_tests_limited``: whatever a service answers before
testing (not found, permission denied, invalid input, an address in use) comes
first, so a 429 never stands in for a 403 or 404.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django_ratelimit.core import get_usage

from core.errors import ConnectionFailed, RateLimited
from core.middleware import note_retry_after

# The refusal waiting for the next connection test of this request, if over the limit.
_refusal: ContextVar[RateLimited | None] = ContextVar("connection_test_refusal", default=None)


def _limits() -> list[tuple[str, str]]:
    return [
        ("user", settings.CONNECTION_TEST_RATE_PER_USER),
        ("ip", settings.CONNECTION_TEST_RATE_PER_IP),
    ]


def _usage(request, key: str, rate: str, increment: bool) -> dict | None:
    group = f"failed-connection-test-{key}"
    try:
        return get_usage(request, group=group, key=key, rate=rate, increment=increment)
    except (ImproperlyConfigured, ValueError):
        if key != "ip":
            raise
        # No client address where RATELIMIT_IP_META_KEY points (a proxy header that a
        # request sent straight to the app lacks; no or an empty REMOTE_ADDR):
        # django-ratelimit raises, which was a 500. Such requests share one count instead.
        return get_usage(
            request,
            group=group,
            key=lambda _group, _request: "no-address",
            rate=rate,
            increment=increment,
        )


def _over_limit(request) -> RateLimited | None:
    for key, rate in _limits():
        usage = _usage(request, key, rate, increment=False)
        if usage and usage["count"] >= usage["limit"]:
            minutes = max(1, round(usage["time_left"] / 60))
            return RateLimited(
                f"Too many failed connection tests. Try again in about {minutes} minute"
                f"{'s' if minutes != 1 else ''}.",
                retry_after=usage["time_left"],
            )
    return None


def connection_test_allowed() -> None:
    """Raise the limiter's refusal, if the request in hand is over its limit."""
    refusal = _refusal.get()
    if refusal is not None:
        raise refusal


@contextmanager
def failed_connection_tests_limited(request) -> Iterator[None]:
    refusal = _over_limit(request)
    token = _refusal.set(refusal)
    try:
        yield
    except ConnectionFailed:
        for key, rate in _limits():
            _usage(request, key, rate, increment=True)
        raise
    except RateLimited as exc:
        if exc is refusal:
            note_retry_after(request, exc.extra["retry_after"])
        raise
    finally:
        _refusal.reset(token)
