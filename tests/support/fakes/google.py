"""A fake Google for the tests: OAuth 2.0 (consent page, token endpoint) and the
parts of the Gmail API v1 that Postkamer uses, over TLS on 127.0.0.1.

It answers the real client libraries (google-auth-oauthlib, google-auth,
google-api-python-client with httplib2) with the documented request and
response shapes, so the provider code runs unchanged against it:

- ``GET /o/oauth2/auth``: a consent page whose "Allow" link redirects to
  ``redirect_uri?code=...&state=...&scope=...`` (the PKCE challenge is kept).
- ``POST /token``: ``authorization_code`` (redirect_uri and PKCE S256 checked,
  codes are single-use) and ``refresh_token`` (optional rotation; a revoked or
  rotated-away token gets ``400 {"error": "invalid_grant"}``).
- ``/gmail/v1/users/me/``: ``profile``, ``labels/{id}``, ``messages`` (labelIds,
  q with ``after:``, ``before:``, ``rfc822msgid:``, pageToken, maxResults),
  ``messages/{id}`` (format raw, metadata, minimal), ``history``
  (startHistoryId; 404 below a configurable minimum), ``messages/send`` (JSON
  ``raw``) and ``/upload/gmail/v1/users/me/messages/send`` (multipart/related).
- ``POST /batch/gmail/v1``: multipart/mixed in and out, ``application/http``
  parts answered with ``Content-ID: <response-...>``; each part is dispatched
  like a request of its own (auth, failures).
- ``POST /gmail/v1/users/me/watch`` and ``.../stop`` (push): the watch is kept in
  ``watches`` (topic, labels, expiration); while one holds, mail stored in a
  watched label is published to the fake Pub/Sub (``pubsub``,
  tests/support/fakes/pubsub.py), which pushes it to the app with an OIDC token.
  ``GET /oauth2/v1/certs`` serves that token's signing certificates, as Google's
  ``https://www.googleapis.com/oauth2/v1/certs`` does (``certs_max_age``).

Unknown or expired bearer tokens get 401. Tests reach the state directly:
``deliver``, ``expire_history``, ``revoke``, ``fail_next`` (a failure queue),
``send_delay``/``send_drop`` (a send that is stored but never answered),
``rotate_refresh_tokens``, ``replace_message_id``, ``unticked_scopes`` (granular
consent) and the ``sent`` list. Google Calendar (freeBusy, events) is in
``google_calendar.py`` (``add_busy``, ``calendar_events``); access tokens carry
their grant's scopes, and ``include_granted_scopes=true`` adds the earlier grant's.

``consent`` opens the consent page and follows its link, as a browser would.

Fixtures (register with ``pytest_plugins = ["tests.support.fakes.google"]``):
``fake_google_server`` (one server per session), ``fake_google`` (fresh state,
settings pointed at the server, and no network beyond loopback).
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import html
import itertools
import json
import re
import secrets
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from email import message_from_string, policy
from email.parser import BytesHeaderParser
from email.utils import make_msgid, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

CLIENT_ID = "postkamer-test.apps.googleusercontent.com"
CLIENT_SECRET = "fake-google-client-secret"
LOOPBACK = "127.0.0.1"
FIRST_HISTORY_ID = 1000
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


@dataclass
class Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    # Sends only: wait this long after storing, or close without answering.
    delay: float = 0.0
    drop: bool = False


def _json(status: int, data: Any, headers: dict[str, str] | None = None) -> Reply:
    return Reply(
        status,
        json.dumps(data).encode(),
        {"Content-Type": "application/json; charset=UTF-8", **(headers or {})},
    )


def api_error(status: int, message: str, reason: str, domain: str = "global") -> Reply:
    """The error body Google APIs answer with (what HttpError parses)."""
    return _json(
        status,
        {
            "error": {
                "code": status,
                "message": message,
                "errors": [{"message": message, "domain": domain, "reason": reason}],
                "status": _STATUS_NAMES.get(status, "UNKNOWN"),
            }
        },
    )


def _oauth_error(status: int, error: str, description: str) -> Reply:
    return _json(status, {"error": error, "error_description": description})


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _bare_id(value: str) -> str:
    return "".join(value.split()).strip("<>")


@dataclass
class FakeMessage:
    id: str
    thread_id: str
    raw: bytes
    labels: list[str]
    internal_date: int  # epoch milliseconds, as Gmail's internalDate
    history_id: int
    message_id: str  # the Message-ID header without angle brackets

    def header(self, name: str) -> str | None:
        return BytesHeaderParser(policy=policy.default).parsebytes(self.raw).get(name)


@dataclass
class FakeAccount:
    address: str
    messages: dict[str, FakeMessage] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    history_id: int = FIRST_HISTORY_ID
    # history.list answers 404 for a startHistoryId below this (Gmail keeps about a week).
    min_history_id: int = 0


@dataclass
class Failure:
    status: int
    path: str  # matches when the request path contains it
    method: str | None
    headers: dict[str, str]
    reason: str
    remaining: int


@dataclass
class SentMessage:
    address: str
    id: str
    thread_id: str
    raw: bytes  # as Gmail stored it
    via: str  # "json" or "upload"
    requested_thread_id: str | None


class FakeGoogle:
    """The state and the request dispatcher; ``start`` serves it over TLS."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._ids = itertools.count(0x18F0000000000001)
        self._server: _Server | None = None
        self.base_url = ""
        self.ca_file: str | None = None  # the CA that signed the server's certificate
        self.reset()

    # --- control (test side) -------------------------------------------------------------

    def reset(self) -> None:
        with self._lock:
            self.accounts: dict[str, FakeAccount] = {}
            self.codes: dict[str, dict] = {}
            self.refresh_tokens: dict[str, dict] = {}
            self.access_tokens: dict[str, dict] = {}
            self.failures: list[Failure] = []
            self.calls: list[str] = []  # "METHOD /path" of every request and batch part
            self.searches: list[str] = []  # the q of every messages.list
            self.sent: list[SentMessage] = []
            self.consent_as: str | None = None  # the Google account that clicks "Allow"
            self.rotate_refresh_tokens = False
            self.access_token_lifetime = 3600
            self.send_delay = 0.0
            self.send_drop = False
            self.replace_message_id = False
            # gzip level of compressed answers (9 is gzip.compress's default). The
            # benchmark lowers it: compressing 10,000 messages at level 9 makes the
            # fake, not the client, the bottleneck on a small machine.
            self.gzip_level = 9
            # Google's consent page lets the user untick scopes; these are unticked.
            self.unticked_scopes: set[str] = set()
            # Google Calendar (tests/support/fakes/google_calendar.py): address -> id -> event.
            self.calendar_events: dict[str, dict[str, dict]] = {}
            # Push: address (lower case) -> the watch; the Pub/Sub that Gmail publishes
            # to (tests/support/fakes/pubsub.py); topics Gmail may publish to (None: any).
            self.watches: dict[str, dict] = {}
            self.watch_lifetime = 7 * 86400
            self.pubsub: Any = None
            self.topics_granted: set[str] | None = None
            self.certs_max_age = 21600
            # Batch answers broken off: the next ones are cut after this many bytes each.
            self.batch_cuts: list[int] = []

    def account(self, address: str) -> FakeAccount:
        with self._lock:
            key = address.lower()
            if key not in self.accounts:
                self.accounts[key] = FakeAccount(address=address)
            return self.accounts[key]

    def deliver(
        self,
        address: str,
        raw: bytes,
        labels: tuple[str, ...] | list[str] = ("INBOX",),
        *,
        internal_date: float | None = None,
    ) -> str:
        """Mail arrives in ``address``'s mailbox; returns its Gmail message id."""
        headers = BytesHeaderParser(policy=policy.default).parsebytes(raw)
        if internal_date is None:
            try:
                internal_date = parsedate_to_datetime(str(headers["Date"])).timestamp()
            except (TypeError, ValueError):
                internal_date = time.time()
        with self._lock:
            message = self._store(self.account(address), raw, list(labels), internal_date, None)
        self.publish(address, message.labels)
        return message.id

    def deliver_many(
        self,
        address: str,
        messages: Iterable[tuple[bytes, float]],
        labels: tuple[str, ...] | list[str] = ("INBOX",),
    ) -> list[str]:
        """Many ``(raw, internal_date)`` messages at once, in order; their Gmail ids.

        The same result as ``deliver`` one by one (threads included), but the
        thread of a reply is found through an index of Message-IDs instead of a
        scan of the whole mailbox per message: loading 10,000 stays linear.
        """
        ids = []
        with self._lock:
            account = self.account(address)
            # Message-ID -> (position of its first message, thread): as _thread_for,
            # the earliest stored message that the reply refers to gives the thread.
            threads: dict[str, tuple[int, str]] = {}
            for position, stored in enumerate(account.messages.values()):
                threads.setdefault(stored.message_id, (position, stored.thread_id))
            for raw, internal_date in messages:
                headers = BytesHeaderParser(policy=policy.default).parsebytes(raw)
                refs = f"{headers.get('In-Reply-To', '')} {headers.get('References', '')}"
                wanted = {_bare_id(r) for r in re.findall(r"<[^<>]+>", refs)}
                found = min((threads[w] for w in wanted if w in threads), default=None)
                thread_id = found[1] if found else None
                message = self._store(
                    account, raw, list(labels), internal_date, thread_id, thread_lookup=False
                )
                threads.setdefault(
                    message.message_id, (len(account.messages) - 1, message.thread_id)
                )
                ids.append(message.id)
        self.publish(address, list(labels))
        return ids

    def expire_history(self, address: str) -> None:
        """Every history id handed out so far is now too old (history.list answers 404)."""
        with self._lock:
            account = self.account(address)
            account.min_history_id = account.history_id + 1

    def revoke(self, address: str) -> None:
        """The user removed the app's access: refresh and access tokens die."""
        with self._lock:
            for record in self.refresh_tokens.values():
                if record["address"].lower() == address.lower():
                    record["valid"] = False
            for token in [
                t for t, r in self.access_tokens.items() if r["address"].lower() == address.lower()
            ]:
                del self.access_tokens[token]

    def issue_tokens(self, address: str, scope: str = "") -> tuple[str, str]:
        """(access token, refresh token) as if ``address`` had consented just now."""
        with self._lock:
            self.account(address)
            refresh = "1//fake-rt-" + secrets.token_urlsafe(24)
            self.refresh_tokens[refresh] = {"address": address, "scope": scope, "valid": True}
            return self._access_token(address, scope), refresh

    def fail_next(
        self,
        status: int,
        path: str = "",
        *,
        method: str | None = None,
        times: int = 1,
        retry_after: float | None = None,
        reason: str | None = None,
    ) -> None:
        """The next ``times`` requests whose path contains ``path`` get this error."""
        headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
        default_reason = {429: "rateLimitExceeded", 403: "forbidden", 404: "notFound"}
        with self._lock:
            self.failures.append(
                Failure(
                    status=status,
                    path=path,
                    method=method,
                    headers=headers,
                    reason=reason or default_reason.get(status, "backendError"),
                    remaining=times,
                )
            )

    def publish(self, address: str, labels: Iterable[str]) -> None:
        """Gmail publishes a change of a watched label to the watch's topic; the fake
        Pub/Sub pushes it (outside the lock: the app calls back into the fake)."""
        with self._lock:
            watch = self.watches.get(address.lower())
            if watch is None or watch["expiration"] < time.time() * 1000:
                return
            if watch["labels"] and not set(watch["labels"]) & set(labels):
                return
            history_id = self.account(address).history_id
            pubsub, topic = self.pubsub, watch["topic"]
        if pubsub is not None:
            pubsub.publish(topic, {"emailAddress": address, "historyId": history_id})

    def messages_of(self, address: str, label: str | None = None) -> list[FakeMessage]:
        with self._lock:
            found = self.account(address).messages.values()
            return [m for m in found if label is None or label in m.labels]

    def consent(self, auth_url: str, *, allow: bool = True) -> str:
        """Open the consent page like a browser would and follow "Allow" (or "Cancel").

        Returns the URL the browser is sent to next (the app's callback).
        """
        context = ssl.create_default_context(cafile=self.ca_file)
        opener = urllib.request.build_opener(
            urllib.request.HTTPSHandler(context=context), urllib.request.ProxyHandler({})
        )
        with opener.open(auth_url, timeout=10) as response:
            page = response.read().decode()
        link = re.search(r"id='%s' href='([^']+)'" % ("allow" if allow else "deny"), page)
        if link is None:
            raise AssertionError(f"no consent link on the page: {page}")
        return html.unescape(link.group(1))

    def calls_to(self, fragment: str) -> list[str]:
        with self._lock:
            return [call for call in self.calls if fragment in call]

    # --- internals ------------------------------------------------------------------------

    def _next_id(self) -> str:
        return f"{next(self._ids):016x}"

    def _access_token(self, address: str, scope: str = "") -> str:
        token = "ya29.fake-" + secrets.token_urlsafe(24)
        self.access_tokens[token] = {
            "address": address,
            "expires": time.time() + self.access_token_lifetime,
            "scope": scope,
        }
        return token

    def _thread_for(self, account: FakeAccount, raw_headers) -> str | None:
        # As Gmail: a reply joins the thread of the message it refers to.
        refs = f"{raw_headers.get('In-Reply-To', '')} {raw_headers.get('References', '')}"
        wanted = {_bare_id(r) for r in re.findall(r"<[^<>]+>", refs)}
        for message in account.messages.values():
            if message.message_id in wanted:
                return message.thread_id
        return None

    def _store(
        self,
        account: FakeAccount,
        raw: bytes,
        labels: list[str],
        internal_date: float,
        thread_id: str | None,
        *,
        thread_lookup: bool = True,  # False: the caller found the thread (deliver_many)
    ) -> FakeMessage:
        headers = BytesHeaderParser(policy=policy.default).parsebytes(raw)
        message_id = _bare_id(str(headers.get("Message-ID") or ""))
        new_id = self._next_id()
        account.history_id += 1
        if not thread_id and thread_lookup:
            thread_id = self._thread_for(account, headers)
        message = FakeMessage(
            id=new_id,
            thread_id=thread_id or new_id,
            raw=raw,
            labels=labels,
            internal_date=int(internal_date * 1000),
            history_id=account.history_id,
            message_id=message_id,
        )
        account.messages[new_id] = message
        short = {"id": message.id, "threadId": message.thread_id}
        account.history.append(
            {
                "id": str(account.history_id),
                "messages": [short],
                "messagesAdded": [{"message": {**short, "labelIds": list(labels)}}],
            }
        )
        return message

    def _take_failure(self, method: str, path: str) -> Reply | None:
        with self._lock:
            for failure in self.failures:
                if failure.path in path and failure.method in (None, method):
                    failure.remaining -= 1
                    if failure.remaining <= 0:
                        self.failures.remove(failure)
                    reply = api_error(failure.status, f"Injected {failure.status}", failure.reason)
                    if failure.path.startswith("/token"):
                        reply = _oauth_error(failure.status, "temporarily_unavailable", "Injected")
                    reply.headers.update(failure.headers)
                    return reply
        return None

    # --- dispatch -------------------------------------------------------------------------

    def dispatch(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Reply:
        """Answer one request (a whole HTTP request, or one part of a batch)."""
        url = urlsplit(target)
        path = url.path
        query = parse_qs(url.query, keep_blank_values=True)
        with self._lock:
            self.calls.append(f"{method} {path}")
        failure = self._take_failure(method, path)
        if failure is not None:
            return failure
        if path == "/favicon.ico":
            return Reply(204)
        if path == "/o/oauth2/auth" and method == "GET":
            return self._authorize(query)
        if path == "/token" and method == "POST":
            return self._token(headers, body)
        if path == "/batch/gmail/v1" and method == "POST":
            return self._batch(headers, body)
        if path == "/oauth2/v1/certs" and method == "GET":
            certs = self.pubsub.certs() if self.pubsub is not None else {}
            return _json(200, certs, {"Cache-Control": f"public, max-age={self.certs_max_age}"})
        if path.startswith("/calendar/v3/"):
            from tests.support.fakes.google_calendar import calendar_dispatch

            rest = path[len("/calendar/v3/") :] + (f"?{url.query}" if url.query else "")
            return calendar_dispatch(self, method, rest, headers, body)
        upload = re.fullmatch(r"/upload/gmail/v1/users/([^/]+)/messages/send", path)
        api = re.fullmatch(r"/gmail/v1/users/([^/]+)/(.+)", path)
        if not (upload or api):
            return api_error(404, f"No route for {method} {path}", "notFound")
        user = (upload or api).group(1)
        account = self._authenticate(headers, user)
        if isinstance(account, Reply):
            return account
        if upload:
            return self._send_upload(account, headers, body) if method == "POST" else _json(405, {})
        return self._gmail(method, api.group(2), query, body, account)

    def _authenticate(self, headers: dict[str, str], user: str) -> FakeAccount | Reply:
        auth = headers.get("authorization", "")
        token = auth[7:] if auth.lower().startswith("bearer ") else ""
        with self._lock:
            record = self.access_tokens.get(token)
            if record is None or record["expires"] < time.time():
                reply = api_error(
                    401,
                    "Request had invalid authentication credentials. Expected OAuth 2 access "
                    "token, login cookie or other valid authentication credential.",
                    "authError",
                )
                reply.headers["WWW-Authenticate"] = 'Bearer realm="https://accounts.google.com/"'
                return reply
            account = self.account(record["address"])
        if user not in ("me", account.address):
            return api_error(403, "Delegation denied for " + account.address, "forbidden")
        return account

    # --- OAuth ----------------------------------------------------------------------------

    def _authorize(self, query: dict[str, list[str]]) -> Reply:
        def arg(name: str) -> str:
            return query.get(name, [""])[0]

        problem = ""
        if arg("client_id") != CLIENT_ID:
            problem = "invalid_client: The OAuth client was not found."
        elif not arg("redirect_uri"):
            problem = "invalid_request: Missing required parameter: redirect_uri"
        elif arg("response_type") != "code":
            problem = "unsupported_response_type"
        elif arg("code_challenge") and arg("code_challenge_method") != "S256":
            problem = "invalid_request: code_challenge_method must be S256"
        address = self.consent_as or arg("login_hint")
        if not problem and not address:
            problem = "No Google account signed in (set fake_google.consent_as)."
        if problem:
            page = (
                f"<!doctype html><title>Error 400</title><p id='error'>{html.escape(problem)}</p>"
            )
            return Reply(400, page.encode(), {"Content-Type": "text/html; charset=utf-8"})
        code = "4/fake-code-" + secrets.token_urlsafe(24)
        with self._lock:
            self.account(address)
            scopes = [s for s in arg("scope").split() if s not in self.unticked_scopes]
            if arg("include_granted_scopes") == "true":
                # Incremental authorization: the new grant keeps what was granted before.
                for record in self.refresh_tokens.values():
                    if record["valid"] and record["address"].lower() == address.lower():
                        scopes += [s for s in record["scope"].split() if s not in scopes]
            self.codes[code] = {
                "address": address,
                "redirect_uri": arg("redirect_uri"),
                "challenge": arg("code_challenge"),
                "scope": " ".join(scopes),
                "used": False,
            }
        redirect = arg("redirect_uri")
        joiner = "&" if "?" in redirect else "?"
        allow = (
            redirect
            + joiner
            + urlencode({"state": arg("state"), "code": code, "scope": arg("scope")})
        )
        deny = redirect + joiner + urlencode({"error": "access_denied", "state": arg("state")})
        scopes = "".join(f"<li>{html.escape(s)}</li>" for s in arg("scope").split())
        page = (
            "<!doctype html><html><head><meta charset='utf-8'><title>Sign in - Google Accounts"
            "</title></head><body><h1>Postkamer wants to access your Google Account</h1>"
            f"<p id='account'>{html.escape(address)}</p><ul id='scopes'>{scopes}</ul>"
            f"<p><a id='deny' href='{html.escape(deny)}'>Cancel</a> "
            f"<a id='allow' href='{html.escape(allow)}'>Allow</a></p></body></html>"
        )
        return Reply(200, page.encode(), {"Content-Type": "text/html; charset=utf-8"})

    def _token(self, headers: dict[str, str], body: bytes) -> Reply:
        form = {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
        client_id, client_secret = form.get("client_id", ""), form.get("client_secret", "")
        auth = headers.get("authorization", "")
        if auth.lower().startswith("basic "):
            decoded = base64.b64decode(auth[6:]).decode()
            client_id, _, client_secret = decoded.partition(":")
        if client_id != CLIENT_ID or client_secret != CLIENT_SECRET:
            return _oauth_error(401, "invalid_client", "The OAuth client was not found.")
        grant = form.get("grant_type")
        with self._lock:
            if grant == "authorization_code":
                return self._exchange_code(form)
            if grant == "refresh_token":
                return self._refresh(form)
        return _oauth_error(400, "unsupported_grant_type", f"Invalid grant_type: {grant}")

    def _exchange_code(self, form: dict[str, str]) -> Reply:
        record = self.codes.get(form.get("code", ""))
        if record is None or record["used"]:
            return _oauth_error(400, "invalid_grant", "Malformed auth code.")
        record["used"] = True  # single use, even when the exchange below fails
        if form.get("redirect_uri") != record["redirect_uri"]:
            return _oauth_error(400, "redirect_uri_mismatch", "Bad Request")
        if record["challenge"]:
            verifier = form.get("code_verifier", "")
            computed = _b64url(hashlib.sha256(verifier.encode()).digest())
            if not verifier or computed != record["challenge"]:
                return _oauth_error(400, "invalid_grant", "Invalid code verifier.")
        refresh = "1//fake-rt-" + secrets.token_urlsafe(24)
        self.refresh_tokens[refresh] = {
            "address": record["address"],
            "scope": record["scope"],
            "valid": True,
        }
        return _json(
            200,
            {
                "access_token": self._access_token(record["address"], record["scope"]),
                "expires_in": self.access_token_lifetime,
                "refresh_token": refresh,
                "scope": record["scope"],
                "token_type": "Bearer",
            },
        )

    def _refresh(self, form: dict[str, str]) -> Reply:
        record = self.refresh_tokens.get(form.get("refresh_token", ""))
        if record is None or not record["valid"]:
            return _oauth_error(400, "invalid_grant", "Token has been expired or revoked.")
        answer = {
            "access_token": self._access_token(record["address"], record["scope"]),
            "expires_in": self.access_token_lifetime,
            "scope": record["scope"],
            "token_type": "Bearer",
        }
        if self.rotate_refresh_tokens:
            record["valid"] = False
            rotated = "1//fake-rt-" + secrets.token_urlsafe(24)
            self.refresh_tokens[rotated] = {**record, "valid": True}
            answer["refresh_token"] = rotated
        return _json(200, answer)

    # --- Gmail ----------------------------------------------------------------------------

    def _gmail(
        self, method: str, rest: str, query: dict[str, list[str]], body: bytes, account
    ) -> Reply:
        def arg(name: str, default: str = "") -> str:
            return query.get(name, [default])[0]

        with self._lock:
            if method == "GET" and rest == "profile":
                return _json(
                    200,
                    {
                        "emailAddress": account.address,
                        "messagesTotal": len(account.messages),
                        "threadsTotal": len({m.thread_id for m in account.messages.values()}),
                        "historyId": str(account.history_id),
                    },
                )
            if method == "GET" and rest.startswith("labels/"):
                label = rest.split("/", 1)[1]
                if label not in ("INBOX", "SENT", "SPAM", "TRASH", "DRAFT", "UNREAD"):
                    return api_error(404, "Requested entity was not found.", "notFound")
                held = [m for m in account.messages.values() if label in m.labels]
                return _json(
                    200,
                    {
                        "id": label,
                        "name": label,
                        "type": "system",
                        "messagesTotal": len(held),
                        "threadsTotal": len({m.thread_id for m in held}),
                    },
                )
            if method == "GET" and rest == "messages":
                return self._list(account, query)
            if method == "GET" and rest.startswith("messages/"):
                message = account.messages.get(rest.split("/", 1)[1])
                if message is None:
                    return api_error(404, "Requested entity was not found.", "notFound")
                return self._message(message, arg("format", "full"), query)
            if method == "GET" and rest == "history":
                return self._history(account, query)
        if method == "POST" and rest == "watch":
            return self._watch(account, body)
        if method == "POST" and rest == "stop":
            with self._lock:
                self.watches.pop(account.address.lower(), None)
            return Reply(204)
        if method == "POST" and rest == "messages/send":
            try:
                data = json.loads(body or b"{}")
                raw = _unb64url(data["raw"])
            except (ValueError, KeyError, TypeError):
                return api_error(400, "'raw' RFC822 payload message string must be set.", "invalid")
            return self._send(account, raw, data.get("threadId"), "json")
        return api_error(404, f"No route for {method} {rest}", "notFound")

    def _matches(self, message: FakeMessage, labels: list[str], q: str, spam_trash: bool) -> bool:
        if not set(labels) <= set(message.labels):
            return False
        if not spam_trash and {"SPAM", "TRASH"} & set(message.labels):
            return False
        for term in q.split():
            name, _, value = term.partition(":")
            if name == "after" and message.internal_date < _query_time(value) * 1000:
                return False
            if name == "before" and message.internal_date >= _query_time(value) * 1000:
                return False
            if name == "rfc822msgid" and message.message_id != _bare_id(value):
                return False
            if name in ("label", "in") and value.upper() not in message.labels:
                return False
        return True

    def _list(self, account: FakeAccount, query: dict[str, list[str]]) -> Reply:
        q = query.get("q", [""])[0]
        self.searches.append(q)
        for term in q.split():
            if term.partition(":")[0] not in ("after", "before", "rfc822msgid", "label", "in"):
                return api_error(400, f"Invalid search query term {term!r}.", "invalidArgument")
        spam_trash = query.get("includeSpamTrash", ["false"])[0] == "true"
        found = [
            m
            for m in account.messages.values()
            if self._matches(m, query.get("labelIds", []), q, spam_trash)
        ]
        found.sort(key=lambda m: (m.internal_date, m.id), reverse=True)  # newest first
        size = min(int(query.get("maxResults", ["100"])[0]), 500)
        start = int(query.get("pageToken", ["0"])[0] or 0)
        page = found[start : start + size]
        answer: dict[str, Any] = {"resultSizeEstimate": len(found)}
        if page:
            answer["messages"] = [{"id": m.id, "threadId": m.thread_id} for m in page]
        if start + size < len(found):
            answer["nextPageToken"] = str(start + size)
        return _json(200, answer)

    def _message(self, message: FakeMessage, fmt: str, query: dict[str, list[str]]) -> Reply:
        answer: dict[str, Any] = {
            "id": message.id,
            "threadId": message.thread_id,
            "labelIds": list(message.labels),
            "historyId": str(message.history_id),
            "internalDate": str(message.internal_date),
            "sizeEstimate": len(message.raw),
            "snippet": "",
        }
        if fmt == "raw":
            answer["raw"] = _b64url(message.raw)
        elif fmt in ("metadata", "full"):
            wanted = {h.lower() for h in query.get("metadataHeaders", [])}
            parsed = BytesHeaderParser(policy=policy.compat32).parsebytes(message.raw)
            answer["payload"] = {
                "mimeType": parsed.get_content_type(),
                "headers": [
                    {"name": name, "value": str(value)}
                    for name, value in parsed.items()
                    if fmt == "full" or not wanted or name.lower() in wanted
                ],
            }
        elif fmt != "minimal":
            return api_error(400, f"Invalid format {fmt!r}", "invalidArgument")
        return _json(200, answer)

    def _history(self, account: FakeAccount, query: dict[str, list[str]]) -> Reply:
        start_text = query.get("startHistoryId", [""])[0]
        if not start_text.isdigit():
            return api_error(400, "Missing or invalid startHistoryId.", "invalidArgument")
        start = int(start_text)
        if start < account.min_history_id:
            return api_error(404, "Requested entity was not found.", "notFound")
        label = query.get("labelId", [""])[0]
        types = query.get("historyTypes", [])
        records = []
        for record in account.history:
            if int(record["id"]) <= start:
                continue
            added = [
                entry
                for entry in record["messagesAdded"]
                if not label or label in entry["message"]["labelIds"]
            ]
            if types and "messageAdded" in types and not added:
                continue
            if label and not added:
                continue
            records.append({**record, "messagesAdded": added})
        size = min(int(query.get("maxResults", ["100"])[0]), 500)
        offset = int(query.get("pageToken", ["0"])[0] or 0)
        answer: dict[str, Any] = {"historyId": str(account.history_id)}
        if records[offset : offset + size]:
            answer["history"] = records[offset : offset + size]
        if offset + size < len(records):
            answer["nextPageToken"] = str(offset + size)
        return _json(200, answer)

    def _watch(self, account: FakeAccount, body: bytes) -> Reply:
        """``users.watch``: as Gmail, a malformed topic is 400 and one that Gmail may not
        publish to is 403; a second watch replaces the first."""
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            return api_error(400, "Invalid JSON payload received.", "invalidArgument")
        topic = str(data.get("topicName") or "")
        if not re.fullmatch(r"projects/[^/]+/topics/[^/]+", topic):
            return api_error(400, "Invalid topicName does not match projects/*/topics/*", "invalid")
        if self.topics_granted is not None and topic not in self.topics_granted:
            return api_error(
                403,
                f"Error sending test message to Cloud PubSub {topic} : "
                "User not authorized to perform this action.",
                "forbidden",
            )
        behavior = str(data.get("labelFilterBehavior") or data.get("labelFilterAction") or "")
        if behavior.lower() not in ("", "include"):
            return api_error(400, "Only include is supported by the fake.", "invalidArgument")
        with self._lock:
            expiration = int((time.time() + self.watch_lifetime) * 1000)
            self.watches[account.address.lower()] = {
                "topic": topic,
                "labels": list(data.get("labelIds") or []),
                "behavior": behavior,
                "expiration": expiration,
            }
            history_id = account.history_id
        return _json(200, {"historyId": str(history_id), "expiration": str(expiration)})

    def _send(self, account: FakeAccount, raw: bytes, thread_id: str | None, via: str) -> Reply:
        headers = BytesHeaderParser(policy=policy.default).parsebytes(raw)
        if not any(headers.get(name) for name in ("To", "Cc", "Bcc")):
            return api_error(400, "Recipient address required", "invalidArgument")
        with self._lock:
            if thread_id and not any(m.thread_id == thread_id for m in account.messages.values()):
                return api_error(404, "Requested entity was not found.", "notFound")
            stored_raw = raw
            if self.replace_message_id or not headers.get("Message-ID"):
                stored_raw = _with_message_id(raw, make_msgid(domain="mail.gmail.com"))
            message = self._store(account, stored_raw, ["SENT"], time.time(), thread_id)
            self.sent.append(
                SentMessage(
                    address=account.address,
                    id=message.id,
                    thread_id=message.thread_id,
                    raw=stored_raw,
                    via=via,
                    requested_thread_id=thread_id,
                )
            )
            reply = _json(
                200, {"id": message.id, "threadId": message.thread_id, "labelIds": ["SENT"]}
            )
            reply.delay, reply.drop = self.send_delay, self.send_drop
        # Gmail publishes on its own time, not before it answers the send.
        threading.Thread(target=self.publish, args=(account.address, ["SENT"]), daemon=True).start()
        return reply

    def _send_upload(self, account: FakeAccount, headers: dict[str, str], body: bytes) -> Reply:
        parts = _split_multipart(headers.get("content-type", ""), body)
        if len(parts) != 2:
            return api_error(400, "Expected metadata and media parts.", "invalidArgument")
        metadata = json.loads(parts[0][1] or b"{}")
        return self._send(account, parts[1][1], metadata.get("threadId"), "upload")

    # --- batch ----------------------------------------------------------------------------

    def _batch(self, headers: dict[str, str], body: bytes) -> Reply:
        content_type = headers.get("content-type", "")
        outer = message_from_string(f"Content-Type: {content_type}\r\n\r\n" + body.decode())
        if not outer.is_multipart():
            return api_error(400, "Batch requests must be multipart/mixed.", "invalidArgument")
        boundary = "batch_" + secrets.token_hex(12)
        chunks = []
        for part in outer.get_payload():
            content_id = (part.get("Content-ID") or "").strip()
            request_text = part.get_payload()
            request_line, _, rest = request_text.partition("\n")
            method, target, _version = request_line.strip().split(" ", 2)
            inner = message_from_string(rest)
            inner_headers = {k.lower(): v for k, v in inner.items()}
            if "authorization" not in inner_headers and "authorization" in headers:
                inner_headers["authorization"] = headers["authorization"]
            inner_body = (inner.get_payload() or "").encode()
            reply = self.dispatch(method, target, inner_headers, inner_body)
            reason = {200: "OK", 401: "Unauthorized", 404: "Not Found"}.get(reply.status, "Error")
            response_head = "".join(f"{k}: {v}\r\n" for k, v in reply.headers.items())
            answer_id = "<response-" + content_id.strip("<>") + ">"
            chunks.append(
                f"--{boundary}\r\nContent-Type: application/http\r\nContent-ID: {answer_id}\r\n\r\n"
                f"HTTP/1.1 {reply.status} {reason}\r\n{response_head}"
                f"Content-Length: {len(reply.body)}\r\n\r\n{reply.body.decode()}\r\n"
            )
        payload = ("".join(chunks) + f"--{boundary}--\r\n").encode()
        with self._lock:
            if self.batch_cuts:
                payload = payload[: self.batch_cuts.pop(0)]
        return Reply(200, payload, {"Content-Type": f"multipart/mixed; boundary={boundary}"})

    # --- serving --------------------------------------------------------------------------

    def start(self, context: ssl.SSLContext) -> None:
        self._server = _Server(self, context)
        host, port = self._server.server_address[:2]
        self.base_url = f"https://{host}:{port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _query_time(value: str) -> int:
    """Gmail's after:/before: take epoch seconds or a YYYY/MM/DD date."""
    if value.isdigit():
        return int(value)
    year, month, day = (int(x) for x in value.split("/"))
    return int(time.mktime((year, month, day, 0, 0, 0, 0, 0, -1)))


def _with_message_id(raw: bytes, message_id: str) -> bytes:
    head, sep, rest = raw.partition(b"\r\n\r\n")
    if not sep:
        head, sep, rest = raw.partition(b"\n\n")
    newline = b"\r\n" if sep == b"\r\n\r\n" else b"\n"
    lines = [line for line in head.split(newline) if not line.lower().startswith(b"message-id:")]
    lines.append(b"Message-ID: " + message_id.encode())
    return newline.join(lines) + sep + rest


def _split_multipart(content_type: str, body: bytes) -> list[tuple[bytes, bytes]]:
    """(headers, body) of each part, bytes untouched (the email package would re-encode)."""
    found = re.search(r'boundary="?([^";]+)"?', content_type)
    if not found:
        return []
    delimiter = b"--" + found.group(1).encode()
    parts = []
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        chunk = chunk[2:] if chunk.startswith(b"\r\n") else chunk[1:]
        blank = re.search(rb"\r?\n\r?\n", chunk)  # the first blank line ends the headers
        if blank is None:
            continue
        head, content = chunk[: blank.start()], chunk[blank.end() :]
        content = content[:-2] if content.endswith(b"\r\n") else content.removesuffix(b"\n")
        parts.append((head, content))
    return parts


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10  # an idle keep-alive connection does not hold its thread forever
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # the test output is not the place for an access log

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        reply = self.server.fake.dispatch(self.command, self.path, headers, body)
        if reply.delay:
            time.sleep(reply.delay)
        if reply.drop:
            # The request was handled, but the answer never leaves: as a connection
            # that breaks right after the server acted.
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        body = reply.body
        if "gzip" in headers.get("accept-encoding", "") and len(body) > 200:
            # As Google does: clients must cope with it.
            body = gzip.compress(body, compresslevel=self.server.fake.gzip_level)
            reply.headers["Content-Encoding"] = "gzip"
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = _serve


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stopping must not wait for idle keep-alive connections

    def __init__(self, fake: FakeGoogle, context: ssl.SSLContext) -> None:
        self.fake = fake
        self.context = context
        super().__init__((LOOPBACK, 0), _Handler)

    def get_request(self):
        sock, address = super().get_request()
        # Headers and body leave in separate writes; without this, Nagle's algorithm
        # and the client's delayed ACK add ~40 ms to every answer.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # The TLS handshake happens in the handler's thread, at its first read, so a
        # client that never completes it cannot stall the accept loop.
        return self.context.wrap_socket(
            sock, server_side=True, do_handshake_on_connect=False
        ), address

    def handle_error(self, request, client_address) -> None:
        pass  # aborted handshakes and closed keep-alive connections are normal here


# --- helpers for tests ------------------------------------------------------------------------


_LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1"}


@contextlib.contextmanager
def loopback_only() -> Iterator[None]:
    """Fail every name lookup except loopback: no test may reach a real Google."""
    real = socket.getaddrinfo

    def guarded(host, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else host
        if name not in _LOOPBACK_NAMES and name is not None:
            raise socket.gaierror(socket.EAI_NONAME, f"{name} is not loopback (blocked in tests)")
        return real(host, *args, **kwargs)

    socket.getaddrinfo = guarded
    try:
        yield
    finally:
        socket.getaddrinfo = real


@pytest.fixture(scope="session")
def fake_google_server(mail_ca) -> Iterator[FakeGoogle]:
    fake = FakeGoogle()
    fake.ca_file = str(mail_ca.path)
    fake.start(mail_ca.server_context(LOOPBACK, "localhost"))
    yield fake
    fake.stop()


@pytest.fixture
def fake_google(fake_google_server: FakeGoogle, settings, mail_ca) -> Iterator[FakeGoogle]:
    """A fresh fake Google, with Postkamer's Google settings pointing at it."""
    fake = fake_google_server
    fake.reset()
    base = fake.base_url
    settings.GOOGLE_CLIENT_ID = CLIENT_ID
    settings.GOOGLE_CLIENT_SECRET = CLIENT_SECRET
    settings.GOOGLE_AUTH_URI = f"{base}/o/oauth2/auth"
    settings.GOOGLE_TOKEN_URI = f"{base}/token"
    settings.GMAIL_API_ENDPOINT = f"{base}/"
    settings.GMAIL_BATCH_URI = f"{base}/batch/gmail/v1"
    settings.GOOGLE_CALENDAR_API_ENDPOINT = f"{base}/calendar/v3/"
    settings.OAUTH_CA_FILE = str(mail_ca.path)
    settings.PROVIDER_HTTP_TIMEOUT = 5
    with loopback_only():
        yield fake
    fake.reset()
