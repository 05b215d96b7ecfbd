"""Gmail through the Gmail API (google-api-python-client), signed in with OAuth 2.0.

Scopes, and why each is asked for (the least that does the job):

- ``gmail.readonly``: list and read INBOX and SENT, ``users.getProfile`` (where
  the mailbox address comes from, never from what the user typed), and find a
  sent message by its Message-ID when a send's outcome is unknown.
- ``gmail.send``: send mail.

``gmail.modify`` is not requested: Postkamer never changes, moves or deletes
anything in the user's mailbox, and a consent screen should not ask for access
that is never used.

Sign-in (``GoogleOAuthClient``): google-auth-oauthlib's ``Flow`` with PKCE
(S256) and ``prompt=consent``, so Google hands out a refresh token on every
consent, also on a reconnect. Refreshes use google-auth; the tokens live
encrypted on the mailbox (``inboxes.oauth``). The API calls use a bearer token
from ``inboxes.oauth.access_token_for`` in credentials that hold no refresh
token, so the client library can never refresh (and rotate) by itself: all
refreshes go through the per-mailbox lease that commits a rotated token at once.
A 401 expires the stored token and retries once; a second 401 means the grant
is unusable and the mailbox needs a new sign-in.

Reading: label ``INBOX``, plus ``SENT`` for personal mailboxes. The first sync
lists ``messages.list(labelIds=[label], q="after:<epoch>")``; its cursor is the
profile's historyId taken *before* the listing, so mail that arrives while it
runs is picked up by the next round. Later rounds read ``history.list`` from
that id (``messageAdded`` only); an expired history id (404) lists everything
again with ``reset=True`` and the sync service skips what it has. Keys are
Gmail message ids, oldest first. The cursor only moves once a round is done
(there is no partial cursor): a round cut short is read again from the old
history id, and the keys already stored are skipped. Messages are fetched as ``format=raw`` in
batches of at most 50 (``GMAIL_BATCH_URI``: the client library would send
batches to Google's host whatever ``api_endpoint`` says); one that was deleted
in between (404) is skipped. Rate limits (429, 403 ``rateLimitExceeded`` /
``userRateLimitExceeded``) and 5xx are retried with exponential backoff and
``Retry-After``, bounded; beyond that the error is transient and the task
retries later.

Sending: ``users.messages.send`` with the raw MIME (base64url JSON; a multipart
media upload above ``JSON_SEND_MAX_BYTES``), in the thread of the message it
replies to (found by ``rfc822msgid:``). The send request is made exactly once:
not through httplib2 (which sends a request again when the connection drops
before the answer, i.e. a second copy of the mail), not with ``num_retries``.
No answer, a dropped connection or an ambiguous 5xx raises
``SendOutcomeUnknown``, and the outbox looks the Message-ID up in SENT. Gmail
files what it sends in SENT by itself, so ``store_sent_copy`` does nothing.

TLS: ``OAUTH_CA_FILE``, when set, is the CA bundle trusted for Google's
endpoints (httplib2 ``ca_certs``, requests ``verify``, the send connection)
instead of the default store. Environment proxies and CA variables
(``REQUESTS_CA_BUNDLE``, ``HTTPS_PROXY``) are ignored, so what the settings say
is what is used.
"""

from __future__ import annotations

import base64
import calendar
import contextlib
import http.client
import json
import logging
import random
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.parser import BytesHeaderParser
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import google.auth.transport.requests
import google_auth_httplib2
import httplib2
import requests
from django.conf import settings
from google.auth.exceptions import RefreshError, TransportError
from google.oauth2.credentials import Credentials
from google_auth_oauthlib.flow import Flow
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError
from googleapiclient.http import BatchHttpRequest, HttpRequest, MediaInMemoryUpload
from oauthlib.oauth2.rfc6749.errors import OAuth2Error

from inboxes.models import FolderRole, Mailbox, MailboxKind, Provider
from inboxes.oauth import (
    OAuthGrant,
    OAuthTokens,
    access_token_for,
    mark_needs_reauth,
    missing_settings,
    tokens_load,
    tokens_store,
)
from inboxes.providers.base import (
    Changes,
    FolderSpec,
    ProviderError,
    RawMessage,
    SendOutcomeUnknown,
    SendResult,
)

log = logging.getLogger(__name__)

SCOPES = (
    "https://www.googleapis.com/auth/gmail.readonly",
    "https://www.googleapis.com/auth/gmail.send",
)
INBOX = "INBOX"
SENT = "SENT"

LIST_PAGE_SIZE = 500  # messages.list allows 500
HISTORY_PAGE_SIZE = 500
FETCH_BATCH_SIZE = 50  # Google: at most 100 per batch, 50 or fewer recommended
# Above this the raw message goes as a media upload rather than inside the JSON body.
JSON_SEND_MAX_BYTES = 4 * 1024 * 1024

READ_RETRIES = 5  # rate limits and 5xx on reads
NETWORK_RETRIES = 2  # connection problems on reads
BACKOFF_BASE_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 32.0
_RATE_LIMIT_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})
_NETWORK_ERRORS = (OSError, httplib2.HttpLib2Error, http.client.HTTPException)

_sleep = time.sleep  # one place to wait, so tests can watch the backoff without waiting


# --- settings-driven HTTP ---------------------------------------------------------------


def _ca_file() -> str | None:
    return settings.OAUTH_CA_FILE or None


def _timeout() -> float:
    return float(settings.PROVIDER_HTTP_TIMEOUT)


def _requests_session() -> requests.Session:
    session = requests.Session()
    # requests would let REQUESTS_CA_BUNDLE replace session.verify and send through
    # environment proxies; only the settings decide where Google traffic goes.
    session.trust_env = False
    session.verify = _ca_file() or True
    return session


class _TokenEndpointRequest(google.auth.transport.requests.Request):
    """google-auth's requests transport with our timeout (its default is 120 s)."""

    def __call__(self, url, method="GET", body=None, headers=None, timeout=None, **kwargs):
        return super().__call__(
            url, method=method, body=body, headers=headers, timeout=timeout or _timeout(), **kwargs
        )


class _NotSent(Exception):
    """The connection failed before any byte of the request left."""


class _OneShotHttp:
    """An httplib2-shaped ``request()`` that sends each request exactly once.

    httplib2 sends a request again, on a new connection, when the server closes
    the connection without answering (its ``RemoteDisconnected`` handling); for
    ``messages.send`` that is a second copy of the mail in the recipient's
    inbox. Here every request gets its own connection: a failure while
    connecting raises ``_NotSent`` (safe to try again later), anything after is
    left to the caller as an unknown outcome.
    """

    def __init__(self, timeout: float, ca_file: str | None) -> None:
        self.timeout = timeout
        self._context = ssl.create_default_context(cafile=ca_file)

    def request(
        self, uri, method="GET", body=None, headers=None, redirections=0, connection_type=None
    ):
        parts = urlsplit(uri)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        if parts.scheme == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                parts.hostname, parts.port, timeout=self.timeout, context=self._context
            )
        else:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=self.timeout)
        if isinstance(body, str):
            body = body.encode("utf-8")  # http.client would encode a str body as Latin-1
        try:
            try:
                conn.connect()
            except OSError as exc:  # refused, unreachable, TLS handshake failed
                raise _NotSent(str(exc) or type(exc).__name__) from exc
            headers = {k: v for k, v in (headers or {}).items() if k.lower() != "accept-encoding"}
            # httplib2 would decompress a gzip answer; this small answer needs none.
            headers["accept-encoding"] = "identity"
            conn.request(method, target, body=body, headers=headers)
            response = conn.getresponse()
            content = response.read()
        finally:
            conn.close()
        return httplib2.Response(response), content


# --- errors --------------------------------------------------------------------------------


def _error_data(exc: HttpError) -> dict:
    try:
        data = json.loads(exc.content or b"{}")
    except ValueError:
        return {}
    error = data.get("error") if isinstance(data, dict) else None
    return error if isinstance(error, dict) else {}


def _reasons(exc: HttpError) -> set[str]:
    return {
        str(item.get("reason", ""))
        for item in _error_data(exc).get("errors", [])
        if isinstance(item, dict)
    }


def _status(exc: HttpError) -> int:
    return int(exc.resp.status)


def _rate_limited(exc: HttpError) -> bool:
    return _status(exc) == 429 or (
        _status(exc) == 403 and bool(_reasons(exc) & _RATE_LIMIT_REASONS)
    )


def _retryable(exc: HttpError) -> bool:
    return _rate_limited(exc) or _status(exc) >= 500 or _status(exc) == 408


def _retry_after(exc: HttpError) -> float | None:
    value = exc.resp.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        return max((parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds(), 0.0)
    except (TypeError, ValueError):
        return None


def _describe(exc: HttpError) -> str:
    message = _error_data(exc).get("message") or exc.reason or ""
    return f"{_status(exc)} {message}".strip()


def _read_error(exc: HttpError, action: str) -> ProviderError:
    """A read that failed for good. 400/403 (API disabled, wrong scopes, mail
    service off) will fail the same way next time; everything else may pass."""
    permanent = _status(exc) in (400, 403) and not _rate_limited(exc)
    return ProviderError(f"Gmail could not {action}: {_describe(exc)}", permanent=permanent)


@contextlib.contextmanager
def _gmail_errors(action: str) -> Iterator[None]:
    try:
        yield
    except HttpError as exc:
        raise _read_error(exc, action) from exc
    except _NETWORK_ERRORS as exc:
        raise ProviderError(f"Gmail could not be reached to {action}: {exc!r}") from exc


def _backoff_delay(attempt: int, exc: HttpError | None) -> float:
    """Seconds to wait before attempt ``attempt + 1``; raises when Google asks for
    longer than a worker should block (the task is retried later instead)."""
    asked = _retry_after(exc) if exc is not None else None
    if asked is not None:
        if asked > BACKOFF_MAX_SECONDS:
            raise ProviderError(f"Gmail asks to wait {asked:.0f} s: {_describe(exc)}")
        return asked
    return min(BACKOFF_BASE_SECONDS * 2**attempt, BACKOFF_MAX_SECONDS) * (
        0.5 + random.random() / 2  # noqa: S311 - jitter, not security
    )


def _bare_message_id(value: str) -> str:
    return "".join(value.split()).strip("<>")


def _epoch(expiry: datetime | None, default_seconds: float = 3600) -> float:
    if expiry is None:
        return time.time() + default_seconds
    # google-auth keeps expiry as a naive UTC datetime.
    return float(calendar.timegm(expiry.utctimetuple()))


def _scope_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return value.split()
    return [str(item) for item in value or []]


# --- the API client for one mailbox -----------------------------------------------------------


@dataclass
class _BatchRound:
    """What one batch request brought back."""

    found: dict[str, dict] = field(default_factory=dict)
    retry: list[str] = field(default_factory=list)
    retry_errors: list[HttpError] = field(default_factory=list)
    failed: list[HttpError] = field(default_factory=list)


class _GmailApi:
    """The Gmail service for one mailbox (or, while connecting, one fresh token)."""

    def __init__(self, mailbox: Mailbox | None, *, token: str = "") -> None:
        self.mailbox = mailbox
        # No refresh token, no expiry: the library treats the token as always valid
        # and never refreshes it itself (see the module docstring).
        self._credentials = Credentials(token=token or access_token_for(mailbox))
        self._read_http = google_auth_httplib2.AuthorizedHttp(
            self._credentials,
            http=httplib2.Http(ca_certs=_ca_file(), timeout=_timeout(), proxy_info=None),
            refresh_status_codes=(),  # a 401 comes back to us (_renew), not to the library
        )
        self._send_http = google_auth_httplib2.AuthorizedHttp(
            self._credentials,
            http=_OneShotHttp(_timeout(), _ca_file()),
            refresh_status_codes=(),
        )
        self.service = build(
            "gmail",
            "v1",
            http=self._read_http,
            static_discovery=True,
            cache_discovery=False,
            client_options={"api_endpoint": settings.GMAIL_API_ENDPOINT},
        )
        self.users = self.service.users()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._read_http.http.close()

    # --- tokens ---

    def _renew(self) -> None:
        """Google refused the token: drop it and get another through the lease."""
        if self.mailbox is None:
            raise ProviderError("Google refused the access token it just issued.", permanent=True)
        rejected = self._credentials.token
        self.mailbox.refresh_from_db(fields=["secrets_ciphertext"])
        tokens = tokens_load(self.mailbox)
        if tokens.access_token == rejected:  # not already replaced by another worker
            tokens.expires_at = 0.0
            tokens_store(self.mailbox, tokens)
        self._credentials.token = access_token_for(self.mailbox)

    def _reauth(self) -> ProviderError:
        reason = "Google refused a freshly refreshed access token; sign in again to reconnect."
        if self.mailbox is not None:
            mark_needs_reauth(self.mailbox, reason)
        return ProviderError(reason, reauth=True)

    # --- reads ---

    def read(self, request: HttpRequest) -> dict:
        """Execute a read: one token renewal on 401, backoff on rate limits and 5xx.
        Other HTTP errors are raised as HttpError for the caller to judge."""
        renewed = False
        attempt = 0
        network_attempt = 0
        while True:
            try:
                return request.execute(http=self._read_http)
            except HttpError as exc:
                if _status(exc) == 401:
                    if renewed:
                        raise self._reauth() from exc
                    self._renew()
                    renewed = True
                    continue
                if not _retryable(exc) or attempt >= READ_RETRIES:
                    raise
                _sleep(_backoff_delay(attempt, exc))
                attempt += 1
            except _NETWORK_ERRORS:
                if network_attempt >= NETWORK_RETRIES:
                    raise
                _sleep(_backoff_delay(network_attempt, None))
                network_attempt += 1

    def list_all(self, first: HttpRequest, next_page: Callable) -> Iterator[dict]:
        """Every page of a list call, following nextPageToken through ``list_next``."""
        request: HttpRequest | None = first
        while request is not None:
            page = self.read(request)
            yield page
            request = next_page(request, page)

    def get_raw(self, ids: list[str]) -> dict[str, dict]:
        """``messages.get(format=raw)`` for ``ids`` in batch requests; ids that no
        longer exist (404) are left out. Items that hit a rate limit or a 5xx are
        sent again, alone, after a backoff; the others are kept."""
        results: dict[str, dict] = {}
        pending = list(ids)
        attempt = 0
        network_attempt = 0
        renewed = False
        while pending:
            try:
                round_ = self._batch_round(pending)
            except RefreshError as exc:
                # A part answered 401 and the library tried to refresh credentials
                # that cannot refresh: renew through the lease and run it again.
                if renewed:
                    raise self._reauth() from exc
                self._renew()
                renewed = True
                continue
            except HttpError as exc:  # the batch request as a whole
                if _status(exc) == 401:
                    if renewed:
                        raise self._reauth() from exc
                    self._renew()
                    renewed = True
                    continue
                if not _retryable(exc) or attempt >= READ_RETRIES:
                    raise
                _sleep(_backoff_delay(attempt, exc))
                attempt += 1
                continue
            except _NETWORK_ERRORS:
                if network_attempt >= NETWORK_RETRIES:
                    raise
                _sleep(_backoff_delay(network_attempt, None))
                network_attempt += 1
                continue
            results.update(round_.found)
            if round_.failed:
                raise round_.failed[0]
            if round_.retry:
                if attempt >= READ_RETRIES:
                    raise round_.retry_errors[-1]
                _sleep(_backoff_delay(attempt, round_.retry_errors[-1]))
                attempt += 1
            pending = round_.retry
        return results

    def _batch_round(self, ids: list[str]) -> _BatchRound:
        outcome = _BatchRound()

        def on_item(request_id: str, response: dict | None, exception: HttpError | None) -> None:
            if exception is None:
                outcome.found[request_id] = response or {}
            elif _status(exception) == 404:
                log.info("gmail message %s was deleted before it was fetched", request_id)
            elif _retryable(exception):
                outcome.retry.append(request_id)
                outcome.retry_errors.append(exception)
            else:
                outcome.failed.append(exception)

        batch = BatchHttpRequest(callback=on_item, batch_uri=settings.GMAIL_BATCH_URI)
        for message_id in ids:
            batch.add(
                self.users.messages().get(userId="me", id=message_id, format="raw"),
                request_id=message_id,
            )
        batch.execute(http=self._read_http)
        return outcome

    # --- the send ---

    def send_once(self, request: HttpRequest) -> dict:
        """Execute the send request exactly once (plus once more after a 401,
        which Google answers before it looks at the message)."""
        for attempt in range(2):
            try:
                return request.execute(http=self._send_http)  # never num_retries
            except HttpError as exc:
                if _status(exc) == 401 and attempt == 0:
                    self._renew()
                    continue
                if _status(exc) == 401:
                    raise self._reauth() from exc
                raise _send_error(exc) from exc
            except _NotSent as exc:
                raise ProviderError(f"Gmail could not be reached; nothing was sent: {exc}") from exc
            except (OSError, http.client.HTTPException) as exc:
                raise SendOutcomeUnknown(
                    "The message went to Gmail but no answer came back "
                    f"({exc!r}); it may have been sent."
                ) from exc
        raise AssertionError("unreachable")


def _send_error(exc: HttpError) -> ProviderError:
    """429/503 and rate limits are refusals before the message was taken: retry
    later. 500/502/504 may come after Gmail acted: unknown. Other 4xx: permanent."""
    detail = _describe(exc)
    if _rate_limited(exc) or _status(exc) == 503:
        return ProviderError(f"Gmail refused the message for now ({detail}); nothing was sent.")
    if _status(exc) >= 500:
        return SendOutcomeUnknown(f"Gmail answered {detail}; the message may have been sent.")
    return ProviderError(f"Gmail refused the message: {detail}", permanent=True)


# --- OAuth ------------------------------------------------------------------------------------


class GoogleOAuthClient:
    """Google sign-in for Gmail mailboxes (``inboxes.oauth.OAuthClient``)."""

    provider = Provider.GMAIL
    label = "Gmail"

    def missing_settings(self) -> list[str]:
        return missing_settings(Provider.GMAIL)

    def _flow(self, redirect_uri: str, **kwargs: Any) -> Flow:
        client_config = {
            "web": {
                "client_id": settings.GOOGLE_CLIENT_ID,
                "client_secret": settings.GOOGLE_CLIENT_SECRET,
                "auth_uri": settings.GOOGLE_AUTH_URI,
                "token_uri": settings.GOOGLE_TOKEN_URI,
            }
        }
        flow = Flow.from_client_config(
            client_config, scopes=list(SCOPES), redirect_uri=redirect_uri, **kwargs
        )
        # See _requests_session: the environment must not pick the CA bundle or a proxy.
        flow.oauth2session.trust_env = False
        return flow

    def begin(self, *, redirect_uri: str, login_hint: str = "") -> tuple[str, dict]:
        flow = self._flow(redirect_uri)
        extra = {"login_hint": login_hint} if login_hint else {}
        # prompt=consent: Google issues a refresh token only on a consent, and a
        # reconnect must get a new one.
        url, state = flow.authorization_url(access_type="offline", prompt="consent", **extra)
        return url, {"state": state, "code_verifier": flow.code_verifier}

    def complete(self, *, flow: dict, params: dict[str, str], redirect_uri: str) -> OAuthGrant:
        if params.get("error"):
            raise ProviderError(f"Google answered {params['error']}.", permanent=True)
        code = params.get("code", "")
        if not code:
            raise ProviderError("Google sent no authorization code.", permanent=True)
        oauth_flow = self._flow(
            redirect_uri, state=flow["state"], code_verifier=flow["code_verifier"]
        )
        try:
            token = dict(
                oauth_flow.fetch_token(code=code, verify=_ca_file() or True, timeout=_timeout())
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
        api = _GmailApi(None, token=access_token)
        try:
            with _gmail_errors("read the account's profile"):
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
        session = _requests_session()
        try:
            credentials.refresh(_TokenEndpointRequest(session))
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


# --- reading ----------------------------------------------------------------------------------


class GmailSession:
    """Reads one Gmail mailbox (``MailSession``); a context manager."""

    def __init__(self, mailbox: Mailbox) -> None:
        self.mailbox = mailbox
        self._api: _GmailApi | None = None

    def __enter__(self) -> GmailSession:
        self._api = _GmailApi(self.mailbox)
        return self

    def __exit__(self, *exc_info) -> None:
        if self._api is not None:
            self._api.close()
            self._api = None

    @property
    def api(self) -> _GmailApi:
        assert self._api is not None, "use the session as a context manager"
        return self._api

    def folders(self) -> list[FolderSpec]:
        folders = [FolderSpec(FolderRole.INBOX, INBOX)]
        if self.mailbox.kind == MailboxKind.PERSONAL:
            folders.append(FolderSpec(FolderRole.SENT, SENT))
        return folders

    def sent_folder(self) -> FolderSpec | None:
        return FolderSpec(FolderRole.SENT, SENT)

    def changes(self, folder: FolderSpec, cursor: dict, since: datetime | None) -> Changes:
        history_id = str((cursor or {}).get("history_id") or "")
        with _gmail_errors(f"list the changes in {folder.name}"):
            if history_id:
                try:
                    keys, latest = self._history(folder.name, history_id)
                except HttpError as exc:
                    if _status(exc) != 404:
                        raise
                    # The history id expired: list everything again (reset).
                    log.info("gmail history %s expired for %s", history_id, self.mailbox.pk)
                else:
                    return Changes(
                        keys=keys,
                        cursor={"history_id": latest},
                        server_count=self._label_count(folder.name),
                    )
            # Taken before listing: what arrives during the listing is after it.
            start = str(self.api.read(self.api.users.getProfile(userId="me"))["historyId"])
            keys = self._list_ids(folder.name, since)
            return Changes(
                keys=keys,
                cursor={"history_id": start},
                reset=bool(history_id),
                server_count=self._label_count(folder.name),
            )

    def _history(self, label: str, start: str) -> tuple[list[str], str]:
        history = self.api.users.history()
        first = history.list(
            userId="me",
            startHistoryId=start,
            labelId=label,
            historyTypes=["messageAdded"],
            maxResults=HISTORY_PAGE_SIZE,
        )
        keys: dict[str, None] = {}  # ordered and deduplicated
        latest = int(start)
        for page in self.api.list_all(first, history.list_next):
            latest = max(latest, int(page.get("historyId", latest)))
            for record in page.get("history", []):
                for added in record.get("messagesAdded", []):
                    message = added.get("message", {})
                    labels = message.get("labelIds")
                    if message.get("id") and (labels is None or label in labels):
                        keys[message["id"]] = None
        return list(keys), str(latest)

    def _list_ids(self, label: str, since: datetime | None) -> list[str]:
        messages = self.api.users.messages()
        query = f"after:{int(since.timestamp())}" if since is not None else None
        first = messages.list(userId="me", labelIds=[label], q=query, maxResults=LIST_PAGE_SIZE)
        ids: dict[str, None] = {}
        for page in self.api.list_all(first, messages.list_next):
            for message in page.get("messages", []):
                ids[message["id"]] = None
        return list(reversed(ids))  # Gmail lists newest first

    def _label_count(self, label: str) -> int | None:
        try:
            return int(
                self.api.read(self.api.users.labels().get(userId="me", id=label))["messagesTotal"]
            )
        except (HttpError, KeyError, ValueError):
            return None  # only for the sync ledger; not worth failing a sync over

    def keys_since(self, folder: FolderSpec, since: datetime | None) -> list[str]:
        with _gmail_errors(f"list {folder.name}"):
            return self._list_ids(folder.name, since)

    def fetch(self, folder: FolderSpec, keys: list[str]) -> Iterator[RawMessage]:
        for start in range(0, len(keys), FETCH_BATCH_SIZE):
            chunk = keys[start : start + FETCH_BATCH_SIZE]
            with _gmail_errors(f"fetch messages from {folder.name}"):
                found = self.api.get_raw(chunk)
            for key in chunk:
                message = found.get(key)
                if not message or "raw" not in message:
                    continue  # deleted since it was listed
                internal = message.get("internalDate")
                yield RawMessage(
                    key=key,
                    raw=base64.urlsafe_b64decode(message["raw"] + "=" * (-len(message["raw"]) % 4)),
                    internal_date=datetime.fromtimestamp(int(internal) / 1000, tz=UTC)
                    if internal
                    else None,
                )

    def find_message_id(self, folder: FolderSpec, message_id: str) -> bool:
        bare = _bare_message_id(message_id)
        if not bare:
            return False
        with _gmail_errors(f"search {folder.name}"):
            found = self.api.read(
                self.api.users.messages().list(
                    userId="me",
                    labelIds=[folder.name],
                    q=f"rfc822msgid:{bare}",
                    includeSpamTrash=True,  # sent, then deleted at once, was still sent
                    maxResults=1,
                )
            )
        return bool(found.get("messages"))

    def store_sent_copy(self, raw: bytes) -> None:
        return None  # Gmail keeps what it sends in SENT by itself


# --- sending ----------------------------------------------------------------------------------


class GmailTransport:
    """Sends mail from one Gmail mailbox (``MailTransport``); a context manager."""

    def __init__(self, mailbox: Mailbox) -> None:
        self.mailbox = mailbox
        self._api: _GmailApi | None = None

    def __enter__(self) -> GmailTransport:
        self._api = _GmailApi(self.mailbox)
        return self

    def __exit__(self, *exc_info) -> None:
        if self._api is not None:
            self._api.close()
            self._api = None

    def send(
        self,
        raw: bytes,
        *,
        envelope_from: str,
        recipients: list[str],
        before_data: Callable[[], None],
    ) -> SendResult:
        api = self._api
        assert api is not None, "use the transport as a context manager"
        headers = BytesHeaderParser(policy=policy.default).parsebytes(raw)
        # Looked up before anything is sent: a failure here is safe to retry.
        thread_id = self._thread_of(api, headers)
        metadata: dict[str, str] = {"threadId": thread_id} if thread_id else {}
        messages = api.users.messages()
        if len(raw) > JSON_SEND_MAX_BYTES:
            request = messages.send(
                userId="me",
                body=metadata,
                media_body=MediaInMemoryUpload(raw, mimetype="message/rfc822", resumable=False),
            )
        else:
            body = {**metadata, "raw": base64.urlsafe_b64encode(raw).decode("ascii")}
            request = messages.send(userId="me", body=body)
        before_data()
        sent = api.send_once(request)
        result = SendResult(
            accepted=True,
            detail=f"Gmail accepted it (message {sent.get('id')}, thread {sent.get('threadId')}).",
        )
        ours = _bare_message_id(str(headers.get("Message-ID") or ""))
        stored = self._stored_message_id(api, str(sent.get("id") or ""))
        if stored and stored != ours:
            result.message_id = f"<{stored}>"
        return result

    def _thread_of(self, api: _GmailApi, headers) -> str:
        """The Gmail thread of the message this one replies to ("" if none is found)."""
        candidates = [str(headers.get("In-Reply-To") or "")]
        references = str(headers.get("References") or "").split()
        candidates += list(reversed(references))[:1]
        for candidate in candidates:
            bare = _bare_message_id(candidate)
            if not bare:
                continue
            with _gmail_errors("find the thread to reply in"):
                found = api.read(
                    api.users.messages().list(
                        userId="me", q=f"rfc822msgid:{bare}", includeSpamTrash=True, maxResults=1
                    )
                )
            if found.get("messages"):
                return str(found["messages"][0].get("threadId") or "")
        return ""

    def _stored_message_id(self, api: _GmailApi, gmail_id: str) -> str:
        """The Message-ID Gmail stored (it may replace ours). Best effort: the
        message is sent either way, so a failure here only costs the check."""
        if not gmail_id:
            return ""
        try:
            stored = api.read(
                api.users.messages().get(
                    userId="me", id=gmail_id, format="metadata", metadataHeaders=["Message-ID"]
                )
            )
        except (ProviderError, HttpError, *_NETWORK_ERRORS) as exc:
            log.warning("could not read back sent gmail message %s: %r", gmail_id, exc)
            return ""
        for header in stored.get("payload", {}).get("headers", []):
            if str(header.get("name", "")).lower() == "message-id":
                return _bare_message_id(str(header.get("value", "")))
        return ""
