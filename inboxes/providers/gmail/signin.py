"""Google sign-in for Gmail mailboxes: the consent flow and token refresh."""

from __future__ import annotations

import calendar
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import requests
from django.conf import settings
from google.auth.exceptions import RefreshError, TransportError
from google.oauth2.credentials import Credentials
from google_auth_oauthlib.flow import Flow
from oauthlib.oauth2.rfc6749.errors import OAuth2Error

from inboxes.credentials import OAuthGrant, OAuthTokens, missing_settings
from inboxes.models import Provider
from inboxes.providers.base import ProviderError
from inboxes.providers.gmail.api import GmailApi
from inboxes.providers.gmail.http import (
    TokenEndpointRequest,
    ca_file,
    gmail_errors,
    http_timeout,
    requests_session,
)

SCOPES = (
    "https://www.googleapis.com/auth/gmail.readonly",
    "https://www.googleapis.com/auth/gmail.send",
)


def _epoch(expiry: datetime | None, default_seconds: float = 3600) -> float:
    if expiry is None:
        return time.time() + default_seconds
    # google-auth keeps expiry as a naive UTC datetime.
    return float(calendar.timegm(expiry.utctimetuple()))


def _scope_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return value.split()
    return [str(item) for item in value or []]


class GoogleOAuthClient:
    """Google sign-in for Gmail mailboxes (``inboxes.credentials.OAuthClient``)."""

    provider = Provider.GMAIL
    label = "Gmail"

    def missing_settings(self) -> list[str]:
        return missing_settings(Provider.GMAIL)

    def _flow(self, redirect_uri: str, scopes: Sequence[str] = SCOPES, **kwargs: Any) -> Flow:
        client_config = {
            "web": {
                "client_id": settings.GOOGLE_CLIENT_ID,
                "client_secret": settings.GOOGLE_CLIENT_SECRET,
                "auth_uri": settings.GOOGLE_AUTH_URI,
                "token_uri": settings.GOOGLE_TOKEN_URI,
            }
        }
        flow = Flow.from_client_config(
            client_config, scopes=list(scopes), redirect_uri=redirect_uri, **kwargs
        )
        # See requests_session: the environment must not pick the CA bundle or a proxy.
        flow.oauth2session.trust_env = False
        return flow

    def begin(
        self, *, redirect_uri: str, login_hint: str = "", extra_scopes: Sequence[str] = ()
    ) -> tuple[str, dict]:
        scopes = [*SCOPES, *(s for s in extra_scopes if s not in SCOPES)]
        flow = self._flow(redirect_uri, scopes)
        extra = {"login_hint": login_hint} if login_hint else {}
        # prompt=consent: Google issues a refresh token only on a consent, and a
        # reconnect must get a new one. include_granted_scopes: the new grant keeps
        # what was allowed before (a reconnect keeps the calendar, a calendar
        # consent keeps the mail).
        url, state = flow.authorization_url(
            access_type="offline", prompt="consent", include_granted_scopes="true", **extra
        )
        return url, {"state": state, "code_verifier": flow.code_verifier, "scopes": scopes}

    def complete(self, *, flow: dict, params: dict[str, str], redirect_uri: str) -> OAuthGrant:
        if params.get("error"):
            raise ProviderError(f"Google answered {params['error']}.", permanent=True)
        code = params.get("code", "")
        if not code:
            raise ProviderError("Google sent no authorization code.", permanent=True)
        oauth_flow = self._flow(
            redirect_uri,
            flow.get("scopes") or SCOPES,
            state=flow["state"],
            code_verifier=flow["code_verifier"],
        )
        try:
            token = dict(
                oauth_flow.fetch_token(code=code, verify=ca_file() or True, timeout=http_timeout())
            )
        except Warning as exc:
            # oauthlib raises a Warning when the granted scopes differ from the
            # requested ones (Google lets users untick scopes); judged below.
            token = dict(getattr(exc, "token", None) or {})
            if not token:
                raise ProviderError(f"Google's token answer was unusable: {exc}") from exc
        except OAuth2Error as exc:
            raise ProviderError(
                f"Google refused the sign-in: {exc.description or exc.error}", permanent=True
            ) from exc
        except requests.RequestException as exc:
            raise ProviderError(f"Google could not be reached: {exc}") from exc
        granted = set(_scope_list(token.get("scope"))) or set(SCOPES)
        if not set(SCOPES) <= granted:
            raise ProviderError(
                "Postkamer needs both permissions on Google's consent page, to read and to "
                "send your mail. Connect again and leave both ticked.",
                permanent=True,
            )
        if not token.get("refresh_token"):
            raise ProviderError("Google issued no refresh token; connect again.", permanent=True)
        access_token = str(token["access_token"])
        expires_at = token.get("expires_at") or time.time() + float(token.get("expires_in", 3600))
        api = GmailApi(None, token=access_token)
        try:
            with gmail_errors("read the account's profile"):
                profile = api.read(api.users.getProfile(userId="me"))
        finally:
            api.close()
        address = str(profile["emailAddress"])
        return OAuthGrant(
            tokens=OAuthTokens(
                access_token=access_token,
                refresh_token=str(token["refresh_token"]),
                expires_at=float(expires_at),
                scope=" ".join(sorted(granted)),
            ),
            address=address,
            provider_user_id=address,
        )

    def refresh(self, tokens: OAuthTokens) -> OAuthTokens:
        credentials = Credentials(
            token=None,
            refresh_token=tokens.refresh_token,
            token_uri=settings.GOOGLE_TOKEN_URI,
            client_id=settings.GOOGLE_CLIENT_ID,
            client_secret=settings.GOOGLE_CLIENT_SECRET,
        )
        session = requests_session()
        try:
            credentials.refresh(TokenEndpointRequest(session))
        except RefreshError as exc:
            data = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], dict) else {}
            error = str(data.get("error", ""))
            if error == "invalid_grant":
                raise ProviderError(
                    "Google no longer accepts this sign-in (it was revoked, expired or the "
                    "password changed); reconnect the mailbox.",
                    reauth=True,
                ) from exc
            if error in ("invalid_client", "unauthorized_client"):
                raise ProviderError(
                    f"Google refused this server's OAuth client ({error}); an operator must "
                    "check GOOGLE_CLIENT_ID and GOOGLE_CLIENT_SECRET.",
                    permanent=True,
                ) from exc
            raise ProviderError(f"Google's token refresh failed: {exc}") from exc
        except (TransportError, OSError) as exc:
            raise ProviderError(f"Google could not be reached to refresh: {exc}") from exc
        finally:
            session.close()
        return OAuthTokens(
            access_token=str(credentials.token),
            refresh_token=credentials.refresh_token or tokens.refresh_token,
            expires_at=_epoch(credentials.expiry),
            scope=tokens.scope,
        )
