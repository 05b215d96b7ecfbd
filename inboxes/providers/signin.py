"""Which OAuth client signs a provider's mailboxes in (the sign-in registry).

Gmail API and Microsoft Graph mailboxes sign in with their own provider; an
IMAP/SMTP mailbox that logs in with XOAUTH2 names its sign-in provider in
``Mailbox.oauth_provider``. The client modules are imported on first use.
"""

from __future__ import annotations

from core.errors import Invalid
from inboxes.credentials import OAuthClient
from inboxes.models import Provider


def oauth_client(provider: str) -> OAuthClient:
    if provider == Provider.GMAIL:
        from inboxes.providers.gmail.signin import GoogleOAuthClient

        return GoogleOAuthClient()
    if provider == Provider.MICROSOFT:
        from inboxes.providers.graph.signin import MicrosoftOAuthClient

        return MicrosoftOAuthClient()
    raise Invalid(f"Unknown sign-in provider {provider!r}.")
