"""Microsoft sign-in for Microsoft 365 mailboxes: msal's auth-code flow and token refresh."""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence

import msal
import requests
from django.conf import settings

from inboxes.credentials import OAuthGrant, OAuthTokens, missing_settings
from inboxes.models import Provider
from inboxes.providers.base import ProviderError
from inboxes.providers.graph.http import (
    HttpSession,
    failure,
    graph_root,
    json_of,
    network_failure,
)

SCOPES = ["Mail.ReadWrite", "Mail.Send", "User.Read"]
SHARED_SCOPES = ["Mail.ReadWrite.Shared", "Mail.Send.Shared"]  # see the package docstring
REQUIRED_GRANTS = ("Mail.ReadWrite", "Mail.Send")

# Token-endpoint errors that only a new consent fixes, and those that only the
# operator can fix (the app registration); anything else is worth retrying.
REAUTH_ERRORS = frozenset(
    {"invalid_grant", "interaction_required", "consent_required", "login_required"}
)
CONFIG_ERRORS = frozenset({"invalid_client", "unauthorized_client", "invalid_scope"})

# The callback view reads the answer from the query string. form_post would
# make it a cross-site POST, which carries no SameSite=Lax session cookie, so
# the flow kept in the session (state, PKCE verifier, nonce) could not be found.
warnings.filterwarnings(
    "ignore",
    message=r"response_mode='form_post' is recommended",
    category=UserWarning,
    module=r"msal\.",
)


def _msal_app(http: requests.Session) -> msal.ConfidentialClientApplication:
    try:
        return msal.ConfidentialClientApplication(
            settings.MICROSOFT_CLIENT_ID,
            client_credential=settings.MICROSOFT_CLIENT_SECRET,
            authority=settings.MICROSOFT_AUTHORITY,
            http_client=http,
            # The authority is an operator setting; Microsoft's own hosts need no
            # instance discovery, and nothing else should be asked about them.
            instance_discovery=False,
            token_cache=None,  # a throw-away in-memory cache; ours is the mailbox row
        )
    except (ValueError, requests.RequestException) as exc:
        raise ProviderError(
            f"Could not read Microsoft's sign-in configuration at {settings.MICROSOFT_AUTHORITY}: "
            f"{exc}"
        ) from exc


def _token_error(result: dict) -> ProviderError:
    error = str(result.get("error") or "")
    # Entra descriptions carry trace and correlation ids on later lines.
    description = str(result.get("error_description") or "").splitlines()[:1]
    text = f"Microsoft refused the token request: {error} {' '.join(description)}".strip()[:1000]
    if error in REAUTH_ERRORS or result.get("suberror") in REAUTH_ERRORS:
        return ProviderError(text, reauth=True)
    if error in CONFIG_ERRORS:
        return ProviderError(
            text + " (check MICROSOFT_CLIENT_ID and MICROSOFT_CLIENT_SECRET)", permanent=True
        )
    return ProviderError(text)  # temporarily_unavailable and the like


def _tokens_from(result: dict) -> OAuthTokens:
    if not result.get("access_token"):
        raise ProviderError("Microsoft answered the token request without an access token.")
    scope = result.get("scope") or ""
    if isinstance(scope, list | tuple):
        scope = " ".join(scope)
    return OAuthTokens(
        access_token=str(result["access_token"]),
        refresh_token=str(result.get("refresh_token") or ""),
        expires_at=time.time() + float(result.get("expires_in") or 3600),
        scope=str(scope),
    )


def _check_granted(scope: str) -> None:
    if not scope:
        return
    granted = {item.rsplit("/", 1)[-1].lower() for item in scope.split()}
    missing = [name for name in REQUIRED_GRANTS if name.lower() not in granted]
    if missing:
        raise ProviderError(
            f"Microsoft did not grant {', '.join(missing)}; without it Postkamer cannot work "
            "with this mailbox. An administrator may have to consent for the organisation.",
            permanent=True,
        )


def _me(http: requests.Session, access_token: str) -> dict:
    try:
        response = http.get(
            f"{graph_root()}/me?$select=id,mail,userPrincipalName",
            headers={"Authorization": f"Bearer {access_token}"},
        )
    except requests.RequestException as exc:
        raise network_failure(exc, "read the signed-in account") from exc
    if response.status_code != 200:
        raise failure(response, "read the signed-in account", permanent_statuses=frozenset())
    return json_of(response)


class MicrosoftOAuthClient:
    """The consent flow and token refresh for Microsoft 365 (``credentials.OAuthClient``)."""

    provider = Provider.MICROSOFT
    label = "Microsoft 365"

    def missing_settings(self) -> list[str]:
        return missing_settings(Provider.MICROSOFT)

    def begin(
        self, *, redirect_uri: str, login_hint: str = "", extra_scopes: Sequence[str] = ()
    ) -> tuple[str, dict]:
        scopes = [*SCOPES, *(s for s in extra_scopes if s not in SCOPES)]
        with HttpSession() as http:
            flow = _msal_app(http).initiate_auth_code_flow(
                scopes,
                redirect_uri=redirect_uri,
                login_hint=login_hint or None,
                # Connecting a mailbox is not "sign in as whoever the browser is":
                # let the user pick the account whose mail is meant.
                prompt=msal.Prompt.SELECT_ACCOUNT,
            )
        return flow["auth_uri"], flow

    def complete(self, *, flow: dict, params: dict[str, str], redirect_uri: str) -> OAuthGrant:
        # Only what the protocol defines: anything else in the query is not Microsoft's.
        answer = {
            name: params[name]
            for name in ("code", "state", "error", "error_description", "client_info")
            if name in params
        }
        with HttpSession() as http:
            app = _msal_app(http)
            try:
                result = app.acquire_token_by_auth_code_flow(flow, answer)
            except ValueError as exc:  # state mismatch, or neither code nor error
                raise ProviderError(
                    "The answer from Microsoft does not belong to this sign-in. Start again.",
                    permanent=True,
                ) from exc
            except RuntimeError as exc:  # the id_token's nonce is not ours (a replay)
                raise ProviderError(
                    "The answer from Microsoft failed the replay check. Start again.",
                    permanent=True,
                ) from exc
            except requests.RequestException as exc:
                raise ProviderError(
                    f"Could not reach Microsoft to finish the sign-in: {exc}"
                ) from exc
            if "error" in result:
                raise _token_error(result)
            tokens = _tokens_from(result)
            _check_granted(tokens.scope)
            profile = _me(http, tokens.access_token)
        address = str(profile.get("mail") or profile.get("userPrincipalName") or "").strip()
        if "@" not in address:
            raise ProviderError(
                "Microsoft did not say which mailbox this account has.", permanent=True
            )
        return OAuthGrant(
            tokens=tokens, address=address, provider_user_id=str(profile.get("id") or "")
        )

    def refresh(self, tokens: OAuthTokens) -> OAuthTokens:
        with HttpSession() as http:
            app = _msal_app(http)
            try:
                result = app.acquire_token_by_refresh_token(tokens.refresh_token, scopes=SCOPES)
            except requests.RequestException as exc:
                raise ProviderError(
                    f"Could not reach Microsoft to refresh the sign-in: {exc}"
                ) from exc
        if "error" in result:
            raise _token_error(result)
        return _tokens_from(result)
