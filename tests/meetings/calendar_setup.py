"""Mailboxes for the meetings connection tests: Gmail and Microsoft 365 ones through
the fakes (with or without the calendar permission)."""

from __future__ import annotations

import time

from inboxes.credentials import OAuthGrant, OAuthTokens
from inboxes.models import Mailbox, Provider
from inboxes.oauth_connect import oauth_mailbox_connect
from inboxes.providers.gmail.signin import SCOPES as GMAIL_SCOPES
from inboxes.providers.graph.signin import MicrosoftOAuthClient
from meetings.calendars.consent import GOOGLE_CALENDAR_SCOPES, MICROSOFT_CALENDAR_SCOPES

CALLBACK = "http://testserver/connect/microsoft/callback/"


def gmail_mailbox(fake, user, address: str, *, calendar: bool, kind: str = "personal", **kw):
    scope = " ".join([*GMAIL_SCOPES, *(GOOGLE_CALENDAR_SCOPES if calendar else ())])
    access, refresh = fake.issue_tokens(address, scope=scope)
    grant = OAuthGrant(
        tokens=OAuthTokens(access, refresh, time.time() + 3600, scope),
        address=address,
        provider_user_id=address,
    )
    return oauth_mailbox_connect(actor=user, provider=Provider.GMAIL, grant=grant, kind=kind, **kw)


def graph_mailbox(fake, user, address: str, *, calendar: bool) -> Mailbox:
    if address.lower() not in fake.users:
        fake.add_user(address)
    client = MicrosoftOAuthClient()
    fake.sign_in_as = address
    url, flow = client.begin(
        redirect_uri=CALLBACK, extra_scopes=MICROSOFT_CALENDAR_SCOPES if calendar else ()
    )
    grant = client.complete(flow=flow, params=fake.consent(url), redirect_uri=CALLBACK)
    return oauth_mailbox_connect(
        actor=user, provider=Provider.MICROSOFT, grant=grant, kind="personal"
    )
