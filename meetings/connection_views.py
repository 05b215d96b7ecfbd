"""The incremental calendar consent for the meetings tool (Gmail, Microsoft 365).

``/settings/meetings/calendar/consent/<provider>/`` (URL name
``meetings-calendar-consent``) sends the user through the provider's consent again,
for the mail scopes plus the calendar's, signed in as the connection's mailbox. The
engine's callback (inboxes/oauth_views.py) stores the wider grant on that same
mailbox (a reconnect) and comes back to Settings > Meetings, where the connection's
calendar status is re-read from the grant (meetings/calendars/consent.py).
"""

from __future__ import annotations

import logging

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import redirect
from django.urls import reverse

from accounts.auth import AuthenticatedHttpRequest
from inboxes.oauth_connect import allow_sign_in_forms
from inboxes.oauth_views import PROVIDERS, SESSION_PREFIX
from inboxes.providers.base import ProviderError
from inboxes.providers.signin import oauth_client
from meetings.calendars.consent import CONSENT_PROVIDER, SCOPES_BY_CALENDAR
from meetings.models import CalendarKind, MeetingsConnection

log = logging.getLogger(__name__)
BACK = "settings-email"  # the meetings card is on Settings > Email (h-mui may move it)


@login_required
def calendar_consent(request: AuthenticatedHttpRequest, provider: str) -> HttpResponse:
    connection = (
        MeetingsConnection.objects.filter(user=request.user).select_related("mailbox").first()
    )
    if connection is None or connection.mailbox is None:
        messages.error(request, "Connect the meetings tool to one of your emails first.")
        return redirect(BACK)
    calendar = CalendarKind(connection.calendar)
    if provider not in PROVIDERS or CONSENT_PROVIDER.get(calendar) != provider:
        messages.error(
            request,
            "This calendar does not need that sign-in; choose the calendar again under Meetings.",
        )
        return redirect(BACK)
    client = oauth_client(PROVIDERS[provider])
    missing = client.missing_settings()
    if missing:
        messages.error(
            request,
            f"{client.label} is not set up on this server: an operator must set "
            + ", ".join(missing)
            + ".",
        )
        return redirect(BACK)
    mailbox = connection.mailbox
    redirect_uri = request.build_absolute_uri(reverse("connect-callback", args=[provider]))
    try:
        url, flow = client.begin(
            redirect_uri=redirect_uri,
            login_hint=mailbox.address,
            extra_scopes=SCOPES_BY_CALENDAR[calendar],
        )
    except ProviderError as exc:
        log.warning("%s calendar consent could not be started: %s", provider, exc)
        messages.error(request, f"{client.label} cannot be reached right now; try again. ({exc})")
        return redirect(BACK)
    request.session[SESSION_PREFIX + flow["state"]] = {
        "provider": provider,
        "kind": mailbox.kind,
        "user": str(request.user.pk),
        "reconnect": str(mailbox.pk),
        "flow": flow,
        "next": reverse(BACK),
        "done": f"The meetings tool can now use the calendar of {mailbox.address}.",
    }
    return allow_sign_in_forms(redirect(url))
