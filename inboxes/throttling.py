"""Failed connection tests are limited per user and per IP (django-ratelimit).

Only failures count: an office full of people connecting mailboxes from one
NAT address succeeds without ever meeting the limit, while someone probing
hosts and ports through the connection test is stopped.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django_ratelimit.core import get_usage

from core.errors import ConnectionFailed, RateLimited


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


@contextmanager
def failed_connection_tests_limited(request) -> Iterator[None]:
    for key, rate in _limits():
        usage = _usage(request, key, rate, increment=False)
        if usage and usage["count"] >= usage["limit"]:
            minutes = max(1, round(usage["time_left"] / 60))
            raise RateLimited(
                f"Too many failed connection tests. Try again in about {minutes} minute"
                f"{'s' if minutes != 1 else ''}.",
                retry_after=usage["time_left"],
            )
    try:
        yield
    except ConnectionFailed:
        for key, rate in _limits():
            _usage(request, key, rate, increment=True)
        raise
