"""Failed logins, counted three ways, each against its own limit (django-axes).

The web form and ``POST /api/v1/auth/token/`` share these counts:

- one address from one IP (``AXES_FAILURE_LIMIT``): someone guessing at one login
  is stopped quickly, without locking the owner out from elsewhere;
- one address from any IP (``LOGIN_ADDRESS_FAILURE_LIMIT``, higher): guessing
  spread over many IPs is stopped too;
- one IP across addresses (``LOGIN_IP_FAILURE_LIMIT``, much higher): spraying
  many addresses from one place is stopped, while an office behind one NAT
  address, where people mistype now and then, is never locked out as a whole.

django-axes compares the largest of its counts with one limit; this handler
tells it, instead, how close the nearest count is to its own limit. A
successful login clears that address's failures only, not those of the other
addresses tried from the same IP.
"""

from __future__ import annotations

import math
from typing import Any

from axes.handlers.database import AxesDatabaseHandler
from axes.helpers import get_lockout_parameters
from django.conf import settings
from django.db.models import Sum
from django.http import HttpRequest


def _limit(parameter: str | list[str]) -> int:
    """The failure limit of one of ``AXES_LOCKOUT_PARAMETERS``."""
    if parameter == "ip_address":
        return int(settings.LOGIN_IP_FAILURE_LIMIT)
    if parameter == "username":
        return int(settings.LOGIN_ADDRESS_FAILURE_LIMIT)
    return int(settings.AXES_FAILURE_LIMIT)  # address and IP together


def lockout_seconds() -> int:
    """How long a lock-out lasts after the last counted failure, so at most the wait
    left (``AXES_COOLOFF_TIME`` is in hours; tries while locked are not counted)."""
    return max(1, math.ceil(float(settings.AXES_COOLOFF_TIME) * 3600))


class LoginLimitsHandler(AxesDatabaseHandler):  # type: ignore[misc]  # axes has no types
    def get_failures(self, request: HttpRequest, credentials: dict[str, Any] | None = None) -> int:
        """Failures as axes counts them against ``AXES_FAILURE_LIMIT``.

        Each count is measured by the room left under its own limit; the one
        with the least room decides, so axes locks out exactly when any count
        reaches its limit.
        """
        parameters = get_lockout_parameters(request, credentials)
        counts = [
            attempts.aggregate(total=Sum("failures_since_start"))["total"] or 0
            for attempts in self.get_user_attempts(request, credentials)
        ]
        room = min(
            _limit(parameter) - count for parameter, count in zip(parameters, counts, strict=True)
        )
        return int(settings.AXES_FAILURE_LIMIT) - room

    def reset_user_attempts(
        self, request: HttpRequest, credentials: dict[str, Any] | None = None
    ) -> int:
        """On a successful login: forget that address's failures, from every IP.

        axes would also clear the failures of every other address tried from
        that IP, so a prober holding one real login could wipe the IP's count by
        signing in now and then.
        """
        parameters = get_lockout_parameters(request, credentials)
        attempts = self.filter_user_attempts(request, credentials)
        deleted = 0
        for parameter, matching in zip(parameters, attempts, strict=True):
            if parameter == "username":
                count, _ = matching.delete()
                deleted += count
        return deleted
