"""Microsoft 365 mailboxes through Microsoft Graph.

Sign-in (``MicrosoftOAuthClient``) is msal's auth-code flow with PKCE, state and
nonce. The mail calls (``GraphSession`` reads, ``GraphTransport`` sends) are
plain ``requests`` with a bearer token from ``inboxes.oauth.access_token_for``,
which refreshes it under a per-mailbox lease and commits the rotated refresh
token at once. msal keeps no token cache of ours: each call gets a fresh
in-memory one, because the tokens live encrypted on the mailbox row.

Scopes (delegated permissions), and why each is asked for:

- ``Mail.ReadWrite``: read the inbox and Sent Items, and create the draft every
  send starts from (``Mail.Read`` cannot create drafts, and a draft is what
  gives a send an id and an ``internetMessageId`` to check afterwards).
- ``Mail.Send``: send that draft.
- ``User.Read``: ``/me``, where the mailbox address comes from; never from what
  the user typed.
- ``offline_access`` (msal adds it, with ``openid`` and ``profile``): a refresh
  token, so the workers keep syncing after the hour an access token lasts.

Team emails are addressed as ``/users/{address}``, personal ones as ``/me``:
every team call names the mailbox it means, so a token of another account
fails (403) instead of reading the wrong mailbox. As the connect flow takes the
address from ``/me``, that address is the signed-in account's own, which
``Mail.ReadWrite``/``Mail.Send`` cover. An Exchange *shared* mailbox (one with
no sign-in of its own, opened by a delegate) at ``/users/{address}`` needs
``Mail.ReadWrite.Shared`` and ``Mail.Send.Shared`` (``SHARED_SCOPES``) instead.
They are not requested: nothing can connect such a mailbox yet (its address
would have to come from somewhere other than ``/me``), and a consent screen
should not ask for access that is never used.

Reading: one delta round per folder (``inbox``, and ``sentitems`` for personal
emails) follows ``@odata.nextLink`` to ``@odata.deltaLink``; the cursor is that
link. Keys are Graph message ids, oldest first. ``@removed`` entries are
ignored: deleting mail at Microsoft never deletes what was imported. An expired
delta state (410 ``SyncStateNotFound``) starts a new round with ``reset=True``;
the sync service skips keys it has and deduplicates by content.

Sending: ``POST messages`` makes a draft from our MIME (Graph answers with its
id and ``internetMessageId``), then ``POST messages/{id}/send``. The send
request is never repeated after it may have reached Microsoft: no answer (a
timeout, a dropped connection) or an ambiguous 5xx raises
``SendOutcomeUnknown``, and the outbox looks the Message-ID up in Sent Items.

Throttling: 429 and 503 are retried after their ``Retry-After`` (bounded per
wait, in total and in attempts; beyond that the error is transient and the task
retries later). At most ``MAX_CONCURRENT_REQUESTS`` requests per mailbox run at
once in a process (Graph's limit is 4 per mailbox and app); across processes the
sync lease keeps one sync per mailbox, and a 429 ``MailboxConcurrency`` from
Graph is retried like any 429.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, urlsplit

import msal
import requests
from django.conf import settings
from django.db import transaction
from requests.adapters import HTTPAdapter
from urllib3.exceptions import NewConnectionError

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

SCOPES = ["Mail.ReadWrite", "Mail.Send", "User.Read"]
SHARED_SCOPES = ["Mail.ReadWrite.Shared", "Mail.Send.Shared"]  # see the module docstring
REQUIRED_GRANTS = ("Mail.ReadWrite", "Mail.Send")

INBOX = FolderSpec(FolderRole.INBOX, "inbox")  # Graph's well-known folder names
SENT = FolderSpec(FolderRole.SENT, "sentitems")

DELTA_PAGE_SIZE = 100  # Prefer: odata.maxpagesize (Graph's default page is 10)
LIST_PAGE_SIZE = 100
MAX_CONCURRENT_REQUESTS = 4  # Graph: 4 concurrent requests per mailbox and app
FETCH_WINDOW = 2 * MAX_CONCURRENT_REQUESTS  # messages downloaded (and held) at a time
MAX_ATTEMPTS = 4  # one request and up to three retries on 429/503
MAX_RETRY_WAIT_SECONDS = 30.0  # a longer Retry-After is left to the task's own retry
MAX_TOTAL_WAIT_SECONDS = 60.0
DEFAULT_RETRY_WAIT_SECONDS = 2.0  # 429/503 without Retry-After: 2, 4, 8 s

# Token-endpoint errors that only a new consent fixes, and those that only the
# operator can fix (the app registration); anything else is worth retrying.
REAUTH_ERRORS = frozenset(
    {"invalid_grant", "interaction_required", "consent_required", "login_required"}
)
CONFIG_ERRORS = frozenset({"invalid_client", "unauthorized_client", "invalid_scope"})
# Graph error codes that stay the same however often the call is repeated.
PERMANENT_GRAPH_CODES = frozenset(
    {"ErrorAccessDenied", "MailboxNotEnabledForRESTAPI", "MailboxNotSupportedForRESTAPI"}
)
DELTA_GONE_CODES = frozenset({"syncstatenotfound", "syncstateinvalid"})

# The callback view reads the answer from the query string. form_post would
# make it a cross-site POST, which carries no SameSite=Lax session cookie, so
# the flow kept in the session (state, PKCE verifier, nonce) could not be found.
warnings.filterwarnings(
    "ignore",
    message=r"response_mode='form_post' is recommended",
    category=UserWarning,
    module=r"msal\.",
)


# --- HTTP ------------------------------------------------------------------------------------------


class _HttpSession(requests.Session):
    """requests with our trust store, a timeout on every call and no hidden retries."""

    def __init__(self) -> None:
        super().__init__()
        # REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE in the environment would silently
        # replace ``verify`` (and with it OAUTH_CA_FILE).
        self.trust_env = False
        self.verify = settings.OAUTH_CA_FILE or True
        self.default_timeout = float(settings.PROVIDER_HTTP_TIMEOUT)
        # No automatic retries anywhere: a retried POST .../send could send twice.
        adapter = HTTPAdapter(
            pool_connections=1, pool_maxsize=MAX_CONCURRENT_REQUESTS, max_retries=0
        )
        self.mount("https://", adapter)
        self.mount("http://", adapter)

    def request(self, method: Any, url: Any, *args: Any, **kwargs: Any) -> requests.Response:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.default_timeout  # msal passes no timeout of its own
        return super().request(method, url, *args, **kwargs)


def _graph_root() -> str:
    return settings.GRAPH_API_ENDPOINT.rstrip("/")


def graph_base(mailbox: Mailbox) -> str:
    """The URL prefix of the mailbox's own resources."""
    if mailbox.kind == MailboxKind.TEAM:
        return f"{_graph_root()}/users/{quote(mailbox.address, safe='@')}"
    return f"{_graph_root()}/me"


def _same_origin(url: str) -> bool:
    """Links Graph hands back must stay on Graph: they are followed with the bearer token."""
    link, root = urlsplit(url), urlsplit(_graph_root())
    return (link.scheme, link.netloc.lower()) == (root.scheme, root.netloc.lower())


def _json(response: requests.Response) -> dict:
    try:
        body = response.json()
    except ValueError as exc:
        raise ProviderError(
            f"Microsoft Graph answered {response.status_code} with something that is not JSON."
        ) from exc
    return body if isinstance(body, dict) else {}


def _graph_error(response: requests.Response) -> tuple[str, str]:
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return "", ""
    if isinstance(error, dict):
        return str(error.get("code") or ""), str(error.get("message") or "")
    return str(error or ""), ""


def _failure(
    response: requests.Response,
    doing: str,
    *,
    permanent_statuses: frozenset[int] = frozenset({403}),
) -> ProviderError:
    code, message = _graph_error(response)
    text = f"Microsoft Graph could not {doing}: {response.status_code} {code} {message}".strip()
    permanent = response.status_code in permanent_statuses or code in PERMANENT_GRAPH_CODES
    return ProviderError(text[:1000], permanent=permanent)


def _network_failure(exc: BaseException, doing: str) -> ProviderError:
    return ProviderError(f"Could not reach Microsoft Graph to {doing}: {type(exc).__name__}: {exc}")


def _retry_after(response: requests.Response, attempt: int) -> float:
    value = response.headers.get("Retry-After", "").strip()
    if value.isdigit():
        return float(value)
    if value:
        try:
            return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
        except (TypeError, ValueError):
            pass
    return DEFAULT_RETRY_WAIT_SECONDS * 2 ** (attempt - 1)


def _never_left(exc: requests.RequestException) -> bool:
    """True when the request cannot have reached Microsoft (no connection was made)."""
    if isinstance(exc, requests.exceptions.ConnectTimeout | requests.exceptions.SSLError):
        return True
    reason = exc.args[0] if exc.args else None
    reason = getattr(reason, "reason", reason)  # urllib3's MaxRetryError wraps the cause
    return isinstance(reason, NewConnectionError)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# Requests per mailbox in this process, across every session, transport and thread.
_slots_lock = threading.Lock()
_slots: dict[str, threading.BoundedSemaphore] = {}


def _mailbox_slots(mailbox_id: Any) -> threading.BoundedSemaphore:
    with _slots_lock:
        return _slots.setdefault(
            str(mailbox_id), threading.BoundedSemaphore(MAX_CONCURRENT_REQUESTS)
        )


class _DeltaGone(Exception):
    """Graph no longer knows the delta state (410 SyncStateNotFound)."""


# --- One mailbox's Graph connection ------------------------------------------------------------------


class _GraphMailbox:
    """Bearer-token requests to one mailbox, with throttling and one 401 retry."""

    def __init__(self, mailbox: Mailbox) -> None:
        self.mailbox = mailbox
        self.base = graph_base(mailbox)
        self._client = MicrosoftOAuthClient()
        self._slots = _mailbox_slots(mailbox.pk)
        self._http: _HttpSession | None = None
        self._token = ""

    def _open(self) -> None:
        self._http = _HttpSession()
        try:
            # Fails fast (and marks needs_reauth) when the grant is dead.
            self._token = access_token_for(self.mailbox, self._client)
        except BaseException:
            self._close()
            raise

    def _close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    def _once(self, method: str, url: str, token: str, **kwargs: Any) -> requests.Response:
        assert self._http is not None, "use the session as a context manager"
        headers = {**kwargs.pop("headers", {}), "Authorization": f"Bearer {token}"}
        with self._slots:
            return self._http.request(method, url, headers=headers, **kwargs)

    def _throttled(self, method: str, url: str, token: str, **kwargs: Any) -> requests.Response:
        """One request, repeated only while Graph refuses it with 429/503 (so it did
        nothing) and the waits stay bounded; the last answer is returned as it is."""
        waited = 0.0
        attempt = 1
        while True:
            response = self._once(method, url, token, **kwargs)
            if response.status_code not in (429, 503) or attempt >= MAX_ATTEMPTS:
                return response
            wait = _retry_after(response, attempt)
            if wait > MAX_RETRY_WAIT_SECONDS or waited + wait > MAX_TOTAL_WAIT_SECONDS:
                return response
            log.info(
                "Graph answered %s for mailbox %s; retrying in %.1f s",
                response.status_code,
                self.mailbox.pk,
                wait,
            )
            response.close()
            time.sleep(wait)  # outside the slot: a waiting request does not hold one
            waited += wait
            attempt += 1

    def _call(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        """A request with the current token; a 401 gets one fresh token, a second
        401 means the user must sign in again. Network errors propagate."""
        response = self._throttled(method, url, self._token, **kwargs)
        if response.status_code != 401:
            return response
        response.close()
        self._token = self._renew_token(self._token)
        response = self._throttled(method, url, self._token, **kwargs)
        if response.status_code == 401:
            self._give_up_auth()
        return response

    def _request(self, method: str, url: str, doing: str, **kwargs: Any) -> requests.Response:
        try:
            return self._call(method, url, **kwargs)
        except requests.RequestException as exc:
            raise _network_failure(exc, doing) from exc

    def _renew_token(self, refused: str) -> str:
        """Expire the stored access token Graph refused, then get a new one.

        Only if it is still the stored one: another worker may have refreshed in
        the meantime, and writing our copy back would replace its rotated
        refresh token with the dead one. The row lock closes that window.
        """
        with transaction.atomic():
            row = Mailbox.objects.select_for_update().get(pk=self.mailbox.pk)
            tokens = tokens_load(row)
            if tokens.access_token == refused:
                tokens.expires_at = 0
                tokens_store(row, tokens)
        return access_token_for(self.mailbox, self._client)

    def _give_up_auth(self) -> None:
        reason = (
            "Microsoft 365 refused this mailbox's sign-in twice (401 from Graph). "
            "Sign in again to reconnect it."
        )
        mark_needs_reauth(self.mailbox, reason)
        raise ProviderError(reason, reauth=True)

    def _message_url(self, key: str, suffix: str = "") -> str:
        return f"{self.base}/messages/{quote(key, safe='')}{suffix}"


class GraphSession(_GraphMailbox):
    """Reads one Microsoft 365 mailbox (a context manager)."""

    def __init__(self, mailbox: Mailbox) -> None:
        super().__init__(mailbox)
        self._received: dict[str, datetime | None] = {}
        self._pool: ThreadPoolExecutor | None = None

    def __enter__(self) -> GraphSession:
        self._open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._close()

    # --- folders ---------------------------------------------------------------------------------

    def folders(self) -> list[FolderSpec]:
        if self.mailbox.kind == MailboxKind.PERSONAL:
            return [INBOX, SENT]
        return [INBOX]

    def sent_folder(self) -> FolderSpec | None:
        return SENT  # team emails too: a send of unknown outcome is looked up there

    def store_sent_copy(self, raw: bytes) -> None:
        """Nothing to do: Microsoft files what it sends in Sent Items itself."""
        return None

    # --- reading ---------------------------------------------------------------------------------

    def changes(self, folder: FolderSpec, cursor: dict, since: datetime | None) -> Changes:
        link = str((cursor or {}).get("delta_link") or "")
        if link and _same_origin(link):
            try:
                items, delta_link = self._delta_round(link)
            except _DeltaGone:
                log.info("delta state of %s %s expired; new round", self.mailbox.pk, folder.name)
            else:
                return self._changes_from(items, delta_link, cursor.get("since"), reset=False)
        # First round, or the stored one no longer applies (expired, or a link to
        # another GRAPH_API_ENDPOINT): list everything in the backfill window again.
        since_iso = _iso(since) if since else None
        try:
            items, delta_link = self._delta_round(self._initial_delta_url(folder, since_iso))
        except _DeltaGone as exc:
            raise ProviderError("Microsoft Graph refused to start a new delta round.") from exc
        return self._changes_from(items, delta_link, since_iso, reset=bool(cursor))

    def _initial_delta_url(self, folder: FolderSpec, since_iso: str | None) -> str:
        url = (
            f"{self.base}/mailFolders/{folder.name}/messages/delta"
            "?$select=id,receivedDateTime,internetMessageId"
        )
        if since_iso:
            url += "&$filter=" + quote(f"receivedDateTime ge {since_iso}", safe=":")
        return url

    def _delta_round(self, url: str) -> tuple[list[dict], str]:
        items: list[dict] = []
        while True:
            response = self._request(
                "GET",
                url,
                "list new messages",
                headers={"Prefer": f"odata.maxpagesize={DELTA_PAGE_SIZE}"},
            )
            if response.status_code == 410 or _graph_error(response)[0].lower() in DELTA_GONE_CODES:
                raise _DeltaGone(url)
            if response.status_code != 200:
                raise _failure(response, "list new messages")
            page = _json(response)
            items.extend(item for item in page.get("value") or [] if isinstance(item, dict))
            next_link = page.get("@odata.nextLink")
            if next_link:
                url = self._checked_link(next_link)
                continue
            delta_link = page.get("@odata.deltaLink")
            if not delta_link:
                raise ProviderError("Microsoft Graph ended a delta round without a deltaLink.")
            return items, self._checked_link(delta_link)

    @staticmethod
    def _checked_link(url: str) -> str:
        if not _same_origin(url):
            raise ProviderError(
                "Microsoft Graph returned a link outside GRAPH_API_ENDPOINT; "
                "it was not followed with the mailbox's token."
            )
        return url

    def _changes_from(
        self, items: list[dict], delta_link: str, since_iso: str | None, *, reset: bool
    ) -> Changes:
        since = _parse_time(since_iso)
        received: dict[str, datetime | None] = {}
        for item in items:
            key = item.get("id")
            if not key or "@removed" in item:
                continue  # non-destructive: what was imported stays
            when = _parse_time(item.get("receivedDateTime"))
            # Also on later rounds: an old message that was only marked read is
            # not new mail, and was outside the backfill window on purpose.
            if since and when and when < since:
                continue
            received[str(key)] = when  # a message changed twice in a round is listed once
        self._received.update(received)
        epoch = datetime.min.replace(tzinfo=UTC)
        keys = sorted(received, key=lambda key: (received[key] or epoch, key))
        return Changes(
            keys=keys, cursor={"delta_link": delta_link, "since": since_iso}, reset=reset
        )

    def keys_since(self, folder: FolderSpec, since: datetime | None) -> list[str]:
        """Every message id in the folder received since ``since`` (reconciliation)."""
        url = (
            f"{self.base}/mailFolders/{folder.name}/messages"
            f"?$select=id,receivedDateTime&$top={LIST_PAGE_SIZE}"
        )
        if since:
            url += "&$filter=" + quote(f"receivedDateTime ge {_iso(since)}", safe=":")
        received: dict[str, datetime | None] = {}
        while url:
            response = self._request("GET", url, "list messages")
            if response.status_code != 200:
                raise _failure(response, "list messages")
            page = _json(response)
            for item in page.get("value") or []:
                if isinstance(item, dict) and item.get("id"):
                    received[str(item["id"])] = _parse_time(item.get("receivedDateTime"))
            next_link = page.get("@odata.nextLink")
            url = self._checked_link(next_link) if next_link else ""
        self._received.update(received)
        epoch = datetime.min.replace(tzinfo=UTC)
        return sorted(received, key=lambda key: (received[key] or epoch, key))

    def fetch(self, folder: FolderSpec, keys: list[str]) -> Iterator[RawMessage]:
        """Raw MIME of each message, in order, up to MAX_CONCURRENT_REQUESTS at a time."""
        for start in range(0, len(keys), FETCH_WINDOW):
            yield from self._fetch_window(keys[start : start + FETCH_WINDOW])

    def _fetch_window(self, keys: list[str]) -> Iterator[RawMessage]:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                max_workers=MAX_CONCURRENT_REQUESTS, thread_name_prefix="graph-fetch"
            )
        token = self._token

        def download(key: str) -> requests.Response:
            # Pool threads only do HTTP; tokens (the database) are handled in this thread.
            return self._throttled("GET", self._message_url(key, "/$value"), token)

        try:
            responses = list(self._pool.map(download, keys))
        except requests.RequestException as exc:
            raise _network_failure(exc, "download messages") from exc
        if any(response.status_code == 401 for response in responses):
            self._token = self._renew_token(token)
            for index, response in enumerate(responses):
                if response.status_code == 401:
                    try:
                        responses[index] = self._throttled(
                            "GET", self._message_url(keys[index], "/$value"), self._token
                        )
                    except requests.RequestException as exc:
                        raise _network_failure(exc, "download a message") from exc
                    if responses[index].status_code == 401:
                        self._give_up_auth()
        for key, response in zip(keys, responses, strict=True):
            if response.status_code == 404:
                continue  # deleted since it was listed
            if response.status_code != 200:
                raise _failure(response, "download a message")
            yield RawMessage(key=key, raw=response.content, internal_date=self._received.get(key))

    def find_message_id(self, folder: FolderSpec, message_id: str) -> bool:
        expression = "internetMessageId eq '{}'".format(message_id.replace("'", "''"))
        url = (
            f"{self.base}/mailFolders/{folder.name}/messages"
            f"?$filter={quote(expression, safe='')}&$select=id,internetMessageId"
        )
        response = self._request("GET", url, "look for a sent message")
        if response.status_code != 200:
            raise _failure(response, "look for a sent message")
        return bool(_json(response).get("value"))


class GraphTransport(_GraphMailbox):
    """Sends as one Microsoft 365 mailbox (a context manager)."""

    def __enter__(self) -> GraphTransport:
        self._open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._close()

    def send(
        self,
        raw: bytes,
        *,
        envelope_from: str,
        recipients: list[str],
        before_data: Callable[[], None],
    ) -> SendResult:
        """Draft from our MIME, then send the draft.

        Graph delivers to the MIME's To/Cc/Bcc (there is no separate envelope);
        the outbox builds ``recipients`` from the same lists.
        """
        draft_id, graph_message_id = self._create_draft(raw)
        before_data()
        try:
            response = self._call("POST", self._message_url(draft_id, "/send"), data=b"")
        except requests.RequestException as exc:
            if _never_left(exc):
                self._discard_draft(draft_id)
                raise _network_failure(exc, "send the message") from exc
            raise SendOutcomeUnknown(
                "The send request went to Microsoft 365 but no answer came back "
                f"({type(exc).__name__}); it may have been sent.",
                message_id=graph_message_id,
            ) from exc
        status = response.status_code
        if 200 <= status < 300:
            ours = BytesHeaderParser().parsebytes(raw).get("Message-ID", "").strip()
            return SendResult(
                accepted=True,
                detail=f"{status} Accepted by Microsoft 365",
                message_id=graph_message_id if graph_message_id != ours else "",
            )
        if status in (500, 502, 504):
            # Graph failed after taking the request: it may or may not have sent it.
            raise SendOutcomeUnknown(
                f"Microsoft 365 answered {status} to the send; it may have been sent.",
                message_id=graph_message_id,
            )
        self._discard_draft(draft_id)
        raise _failure(response, "send the message", permanent_statuses=frozenset({400, 403, 413}))

    def _create_draft(self, raw: bytes) -> tuple[str, str]:
        try:
            response = self._call(
                "POST",
                f"{self.base}/messages",
                data=base64.b64encode(raw),
                headers={"Content-Type": "text/plain"},  # Graph's "MIME in base64" form
            )
        except requests.RequestException as exc:
            # A draft sends nothing: trying again later is safe.
            raise _network_failure(exc, "create the draft") from exc
        if response.status_code not in (200, 201):
            raise _failure(
                response, "create the draft", permanent_statuses=frozenset({400, 403, 413})
            )
        body = _json(response)
        if not body.get("id"):
            raise ProviderError("Microsoft Graph created a draft without an id.")
        return str(body["id"]), str(body.get("internetMessageId") or "").strip()

    def _discard_draft(self, draft_id: str) -> None:
        """Best effort: a send that certainly failed should not leave a draft behind."""
        try:
            self._throttled("DELETE", self._message_url(draft_id), self._token).close()
        except requests.RequestException as exc:
            log.info("could not delete draft of mailbox %s: %s", self.mailbox.pk, exc)


# --- Sign-in -------------------------------------------------------------------------------------------


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
            f"{_graph_root()}/me?$select=id,mail,userPrincipalName",
            headers={"Authorization": f"Bearer {access_token}"},
        )
    except requests.RequestException as exc:
        raise _network_failure(exc, "read the signed-in account") from exc
    if response.status_code != 200:
        raise _failure(response, "read the signed-in account", permanent_statuses=frozenset())
    return _json(response)


class MicrosoftOAuthClient:
    """The consent flow and token refresh for Microsoft 365 (inboxes.oauth.OAuthClient)."""

    provider = Provider.MICROSOFT
    label = "Microsoft 365"

    def missing_settings(self) -> list[str]:
        return missing_settings(Provider.MICROSOFT)

    def begin(self, *, redirect_uri: str, login_hint: str = "") -> tuple[str, dict]:
        with _HttpSession() as http:
            flow = _msal_app(http).initiate_auth_code_flow(
                SCOPES,
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
        with _HttpSession() as http:
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
        with _HttpSession() as http:
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
