"""A fake Microsoft identity platform and Microsoft Graph mail API, over TLS on 127.0.0.1.

The real msal and requests talk to it: msal insists on an https authority, so
the server's certificate comes from the tests' trustme CA (``mail_ca``). It
keeps to the documented shapes of what Postkamer uses:

- identity: ``/{tenant}/v2.0/.well-known/openid-configuration``,
  ``/{tenant}/oauth2/v2.0/authorize`` (a consent page with "Allow"),
  ``/{tenant}/oauth2/v2.0/token`` (auth code with PKCE S256, refresh tokens
  that rotate on every use, ``invalid_grant`` once revoked, an unsigned
  id_token echoing the nonce, ``client_info``);
- Graph under ``/v1.0/me`` and ``/v1.0/users/{address}``: the profile,
  ``mailFolders/{inbox|sentitems|drafts}/messages`` (``$filter`` on
  ``internetMessageId eq`` or ``receivedDateTime ge`` and/or ``lt``, ``$top``/``$skip``),
  ``.../messages/delta`` (pages by ``Prefer: odata.maxpagesize``,
  ``@odata.nextLink`` then ``@odata.deltaLink``, ``@removed`` entries, 410
  ``SyncStateNotFound`` for unknown state), ``messages`` (POST: a draft from
  base64 MIME), ``messages/{id}`` (GET, DELETE), ``messages/{id}/$value`` and
  ``messages/{id}/send`` (202; the mail moves to Sent Items); the calendar
(``calendarView``, ``events``) in ``microsoft_calendar.py``; ``/subscriptions`` with
the validation handshake, and the change and lifecycle notifications it pushes
(``fake.push``), in ``microsoft_push.py``.

Test code drives it directly: ``deliver`` mail, queue failures (``fail_next``),
expire delta state or tokens, ``revoke`` a grant, slow requests down
(``graph_delay``, ``send_delay``), and read what it saw (``requests``,
``sent``, ``max_in_flight``). Every route answers from in-memory state guarded
by one lock; sleeps happen outside it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import html
import json
import re
import secrets
import socket
import ssl
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes
from email.parser import BytesHeaderParser
from email.utils import getaddresses, make_msgid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

import pytest
import requests

from tests.support.fakes.microsoft_push import GraphPush
from tests.support.mailservers import MailCA

HOST = "127.0.0.1"
TENANT = "postkamer-tenant"
TENANT_ID = "7e1c5a2b-3f4d-4c8e-9a6b-0d2f1e3c4b5a"
CLIENT_ID = "00000000-postkamer-test-client"
CLIENT_SECRET = "fake-client-secret"
WELL_KNOWN_FOLDERS = ("inbox", "sentitems", "drafts")
DEFAULT_PAGE_SIZE = 10  # Graph's default when no Prefer: odata.maxpagesize is sent
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_iso(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _graph_id() -> str:
    # Real ids are long base64 strings that may end in "=": clients must quote them.
    return "AAMk" + secrets.token_urlsafe(24) + "="


# --- State ------------------------------------------------------------------------------------------


@dataclass
class FakeMessage:
    id: str
    folder: str
    raw: bytes
    internet_message_id: str
    received: datetime
    seq: int  # the change number of its last change (what delta rounds compare)
    is_draft: bool = False

    @property
    def subject(self) -> str:
        return str(message_from_bytes(self.raw).get("Subject", ""))

    def recipients(self) -> list[str]:
        parsed = message_from_bytes(self.raw)
        values = [str(v) for name in ("To", "Cc", "Bcc") for v in parsed.get_all(name, [])]
        return [address for _name, address in getaddresses(values) if address]


@dataclass
class FakeUser:
    address: str
    name: str
    id: str
    mail: str | None  # Graph's "mail" is null for accounts without an Exchange address
    messages: dict[str, FakeMessage] = field(default_factory=dict)
    removed: list[tuple[int, str, str]] = field(default_factory=list)  # (seq, id, folder)
    delegates: set[str] = field(default_factory=set)


@dataclass
class AccessGrant:
    address: str
    scopes: frozenset[str]
    expires_at: float


@dataclass
class RefreshGrant:
    address: str
    scopes: frozenset[str]
    active: bool = True


@dataclass
class CodeGrant:
    address: str
    redirect_uri: str
    challenge: str
    nonce: str
    scopes: frozenset[str]
    used: bool = False


@dataclass
class RoundState:
    """One delta round: what is left to page through, and where the next round starts."""

    path: str
    address: str
    folder: str
    watermark: int
    since: datetime | None
    select: list[str] | None
    entries: list[dict] = field(default_factory=list)


@dataclass
class SentMail:
    address: str
    raw: bytes
    internet_message_id: str
    recipients: list[str]


@dataclass
class Failure:
    status: int
    retry_after: int | None
    code: str
    match: str


@dataclass
class Seen:
    method: str
    path: str  # path and query, as requested
    headers: dict[str, str]
    body: bytes
    status: int = 0


@dataclass
class Answer:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, payload: Any, **headers: str) -> Answer:
        return cls(
            status, json.dumps(payload).encode(), {"Content-Type": "application/json", **headers}
        )

    @classmethod
    def graph_error(cls, status: int, code: str, message: str, **headers: str) -> Answer:
        return cls.json(status, {"error": {"code": code, "message": message}}, **headers)

    @classmethod
    def page(cls, status: int, text: str) -> Answer:
        return cls(status, text.encode(), {"Content-Type": "text/html; charset=utf-8"})


# --- The server ---------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 15  # idle keep-alive connections end on their own
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        pass

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self.server.fake.handle(self, "GET")

    def do_POST(self) -> None:  # noqa: N802
        self.server.fake.handle(self, "POST")

    def do_DELETE(self) -> None:  # noqa: N802
        self.server.fake.handle(self, "DELETE")

    def do_PATCH(self) -> None:  # noqa: N802
        self.server.fake.handle(self, "PATCH")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fake: FakeMicrosoft, context: ssl.SSLContext) -> None:
        self.fake = fake
        self.context = context
        super().__init__((HOST, 0), _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The TLS handshake runs in the connection's own thread, not in the accept loop.
        request.settimeout(10)
        # Headers and body leave in separate writes; without this, Nagle's algorithm
        # and the client's delayed ACK add ~40 ms to every answer (measured: 45 ms
        # per $value, which capped a bulk download at ~90 messages/s).
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            connection = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        try:
            super().finish_request(connection, client_address)
        except (ssl.SSLError, OSError):
            pass
        finally:
            with contextlib.suppress(OSError):
                connection.close()


class FakeMicrosoft:
    """The fake's state, its fault controls and its HTTP routes."""

    def __init__(self, ca: MailCA) -> None:
        self.client_id = CLIENT_ID
        self.client_secret = CLIENT_SECRET
        self.lock = threading.RLock()
        self._idle = threading.Condition(self.lock)
        self._busy = 0
        self._seq = 0
        self.users: dict[str, FakeUser] = {}
        self.consents: dict[str, dict] = {}
        self.codes: dict[str, CodeGrant] = {}
        self.access_tokens: dict[str, AccessGrant] = {}
        self.refresh_tokens: dict[str, RefreshGrant] = {}
        self.delta_tokens: dict[str, RoundState] = {}
        self.skip_tokens: dict[str, RoundState] = {}
        self.failures: deque[Failure] = deque()
        self.requests: list[Seen] = []
        self.authorize_requests: list[dict[str, str]] = []
        self.token_requests: list[dict[str, str]] = []
        self.sent: list[SentMail] = []
        # The Graph calendar (tests/support/fakes/microsoft_calendar.py): address -> id -> event.
        self.calendar_events: dict[str, dict[str, dict]] = {}
        self.in_flight: dict[str, int] = {}
        self.max_in_flight: dict[str, int] = {}
        self.errors: list[str] = []  # exceptions inside the fake: a test should see none
        # Knobs a test turns.
        self.sign_in_as: str | None = None  # the account that consents (else login_hint)
        self.max_page_size = 50
        self.access_token_lifetime = 3600
        self.graph_delay = 0.0
        self.send_delay = 0.0
        self._send_gate: threading.Event | None = None
        self.assign_message_ids = False
        self.reject_all_tokens = False
        # Change notifications: /subscriptions and the pushes (microsoft_push.py).
        self.push = GraphPush(self)
        self._server = _Server(self, ca.server_context(HOST, "localhost"))
        self.port = self._server.server_address[1]
        self.url = f"https://{HOST}:{self.port}"
        self.authority = f"{self.url}/{TENANT}"
        self.graph_endpoint = f"{self.url}/v1.0"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.02},  # shutdown() waits one poll: keep teardown quick
            name="fake-microsoft",
            daemon=True,
        )
        self.ca_path = str(ca.path)

    # --- lifecycle --------------------------------------------------------------------------------

    def start(self) -> FakeMicrosoft:
        self._thread.start()
        self.push.start()
        return self

    def stop(self) -> None:
        self.push.stop()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Until no request is being answered (e.g. a slow send has finished)."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("the fake is still answering requests")
                self._idle.wait(remaining)

    # --- test controls ----------------------------------------------------------------------------

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def add_user(self, address: str, name: str = "", *, has_mail: bool = True) -> FakeUser:
        with self.lock:
            user = FakeUser(
                address=address,
                name=name or address.split("@")[0].title(),
                id=str(uuid.uuid4()),
                mail=address if has_mail else None,
            )
            self.users[address.lower()] = user
            return user

    def user(self, address: str) -> FakeUser:
        return self.users[address.lower()]

    def deliver(
        self, address: str, raw: bytes, folder: str = "inbox", *, received: datetime | None = None
    ) -> str:
        """Put a message into a folder of a mailbox; returns its Graph id."""
        with self.lock:
            user = self.user(address)
            message_id = str(message_from_bytes(raw).get("Message-ID", "")).strip()
            message = FakeMessage(
                id=_graph_id(),
                folder=folder,
                raw=raw,
                internet_message_id=message_id or make_msgid(domain="fake.outlook.com"),
                received=received or datetime.now(UTC),
                seq=self._next_seq(),
            )
            user.messages[message.id] = message
            self.push.changed(user, message, "created")
            return message.id

    def deliver_many(
        self, address: str, messages: Iterable[tuple[bytes, datetime]], folder: str = "inbox"
    ) -> list[str]:
        """Many ``(raw, received)`` messages at once, in order; their Graph ids.

        As ``deliver`` one by one, but only the header block is parsed for the
        Message-ID, so loading 10,000 messages takes seconds rather than minutes.
        """
        ids = []
        with self.lock:
            user = self.user(address)
            for raw, received in messages:
                headers = BytesHeaderParser().parsebytes(raw)
                message_id = str(headers.get("Message-ID", "")).strip()
                message = FakeMessage(
                    id=_graph_id(),
                    folder=folder,
                    raw=raw,
                    internet_message_id=message_id or make_msgid(domain="fake.outlook.com"),
                    received=received,
                    seq=self._next_seq(),
                )
                user.messages[message.id] = message
                self.push.changed(user, message, "created")
                ids.append(message.id)
        return ids

    def touch(self, address: str, graph_id: str) -> None:
        """A change that is not new mail (e.g. marked read): delta lists it again."""
        with self.lock:
            user = self.user(address)
            user.messages[graph_id].seq = self._next_seq()
            self.push.changed(user, user.messages[graph_id], "updated")

    def delete(self, address: str, graph_id: str) -> None:
        with self.lock:
            user = self.user(address)
            message = user.messages.pop(graph_id)
            user.removed.append((self._next_seq(), graph_id, message.folder))

    def folder(self, address: str, folder: str) -> list[FakeMessage]:
        with self.lock:
            return [m for m in self.user(address).messages.values() if m.folder == folder]

    def fail_next(
        self,
        status: int,
        *,
        retry_after: int | None = None,
        code: str = "",
        match: str = "",
        times: int = 1,
    ) -> None:
        """The next ``times`` Graph requests whose path contains ``match`` fail with ``status``."""
        default_codes = {
            429: "TooManyRequests",
            503: "ServiceUnavailable",
            500: "InternalServerError",
        }
        with self.lock:
            for _ in range(times):
                self.failures.append(
                    Failure(status, retry_after, code or default_codes.get(status, "Error"), match)
                )

    def hold_sends(self) -> None:
        """From now on /send takes the message but answers only after ``release_sends``
        (at most 30 s later): a deterministic "no answer within the client's timeout"."""
        self._send_gate = threading.Event()

    def release_sends(self) -> None:
        if self._send_gate is not None:
            self._send_gate.set()

    def expire_delta_tokens(self) -> None:
        with self.lock:
            self.delta_tokens.clear()
            self.skip_tokens.clear()

    def expire_access_tokens(self) -> None:
        with self.lock:
            self.access_tokens.clear()

    def revoke(self, address: str) -> None:
        """The user revoked the app (or an admin reset the password): every token dies."""
        with self.lock:
            for grant in self.refresh_tokens.values():
                if grant.address.lower() == address.lower():
                    grant.active = False
            for token in [t for t, g in self.access_tokens.items() if g.address == address]:
                del self.access_tokens[token]

    def active_refresh_tokens(self, address: str) -> list[str]:
        with self.lock:
            return [
                token
                for token, grant in self.refresh_tokens.items()
                if grant.active and grant.address.lower() == address.lower()
            ]

    def graph_requests(self, method: str = "", contains: str = "") -> list[Seen]:
        with self.lock:
            return [
                seen
                for seen in self.requests
                if seen.path.startswith("/v1.0/")
                and (not method or seen.method == method)
                and contains in unquote(seen.path)
            ]

    def consent(self, auth_uri: str, *, decision: str = "allow") -> dict[str, str]:
        """What a browser does on the consent page: the callback's query parameters."""
        with requests.Session() as http:
            http.trust_env = False
            http.verify = self.ca_path
            page = http.get(auth_uri, timeout=10)
            assert page.status_code == 200, page.text
            link = re.search(rf'id="{decision}" href="([^"]+)"', page.text)
            assert link, page.text
            answer = http.get(
                self.url + html.unescape(link.group(1)), allow_redirects=False, timeout=10
            )
        assert answer.status_code == 302, answer.text
        return {k: v[0] for k, v in parse_qs(urlsplit(answer.headers["Location"]).query).items()}

    def grant(self, address: str, *, redirect_uri: str = "") -> Any:
        """An ``OAuthGrant`` for ``address`` through Postkamer's real consent round trip."""
        from inboxes.providers.graph.signin import MicrosoftOAuthClient

        redirect_uri = redirect_uri or "http://testserver/connect/microsoft/callback/"
        client = MicrosoftOAuthClient()
        self.sign_in_as = address
        url, flow = client.begin(redirect_uri=redirect_uri)
        return client.complete(flow=flow, params=self.consent(url), redirect_uri=redirect_uri)

    # --- HTTP plumbing ----------------------------------------------------------------------------

    def handle(self, handler: _Handler, method: str) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        seen = Seen(method, handler.path, {k.lower(): v for k, v in handler.headers.items()}, body)
        with self.lock:
            self.requests.append(seen)
            self._busy += 1
        try:
            try:
                answer = self._route(method, handler.path, seen.headers, body)
            except Exception as exc:  # a bug in the fake: make it loud
                with self.lock:
                    self.errors.append(f"{method} {handler.path}: {exc!r}")
                answer = Answer.graph_error(500, "FakeBroken", repr(exc))
            seen.status = answer.status
            self._write(handler, answer)
        finally:
            with self._idle:
                self._busy -= 1
                self._idle.notify_all()

    @staticmethod
    def _write(handler: _Handler, answer: Answer) -> None:
        try:
            handler.send_response(answer.status)
            for name, value in answer.headers.items():
                handler.send_header(name, value)
            handler.send_header("Content-Length", str(len(answer.body)))
            handler.end_headers()
            handler.wfile.write(answer.body)
            handler.wfile.flush()
        except (OSError, ssl.SSLError):
            handler.close_connection = True  # the client gave up (e.g. its timeout)

    def _route(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> Answer:
        split = urlsplit(raw_path)
        query = {k: v[0] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        parts = [unquote(part) for part in split.path.split("/") if part]
        if split.path == "/favicon.ico":
            return Answer(204)
        if parts[:1] == ["v1.0"]:
            return self._graph(method, split.path, parts[1:], query, headers, body)
        if len(parts) >= 2:
            tenant, rest = parts[0], parts[1:]
            if method == "GET" and rest == ["v2.0", ".well-known", "openid-configuration"]:
                return self._openid_configuration(tenant)
            if method == "GET" and rest == ["oauth2", "v2.0", "authorize"]:
                return self._authorize(tenant, query)
            if method == "GET" and rest == ["oauth2", "v2.0", "consent"]:
                return self._consent_decision(query)
            if method == "POST" and rest == ["oauth2", "v2.0", "token"]:
                return self._token(headers, body)
        return Answer.json(404, {"error": "not_found", "error_description": raw_path})

    # --- identity platform ------------------------------------------------------------------------

    def _openid_configuration(self, tenant: str) -> Answer:
        base = f"{self.url}/{tenant}"
        return Answer.json(
            200,
            {
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "token_endpoint_auth_methods_supported": [
                    "client_secret_post",
                    "private_key_jwt",
                    "client_secret_basic",
                ],
                "jwks_uri": f"{base}/discovery/v2.0/keys",
                "response_modes_supported": ["query", "fragment", "form_post"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "issuer": f"{self.url}/{TENANT_ID}/v2.0",
                "request_uri_parameter_supported": False,
                "userinfo_endpoint": f"{self.graph_endpoint}/oidc/userinfo",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "http_logout_supported": True,
                "frontchannel_logout_supported": True,
                "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
                "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nonce", "tid", "oid"],
                "tenant_region_scope": "EU",
                "cloud_instance_name": "microsoftonline.com",
            },
        )

    @staticmethod
    def _error_page(status: int, title: str, detail: str) -> Answer:
        return Answer.page(
            status,
            "<!doctype html><html><head><meta charset='utf-8'><title>Sign in</title></head>"
            f"<body><h1>{html.escape(title)}</h1><p id='error'>{html.escape(detail)}</p>"
            "</body></html>",
        )

    def _authorize(self, tenant: str, query: dict[str, str]) -> Answer:
        with self.lock:
            self.authorize_requests.append(dict(query))
            if query.get("client_id") != self.client_id:
                return self._error_page(
                    400, "Application not found", "AADSTS700016: unknown client_id"
                )
            missing = [
                name
                for name in ("redirect_uri", "state", "code_challenge", "nonce", "scope")
                if not query.get(name)
            ]
            if missing or query.get("response_type") != "code":
                return self._error_page(400, "Bad request", f"missing or wrong: {missing}")
            if query.get("code_challenge_method") != "S256":
                return self._error_page(400, "Bad request", "AADSTS501491: PKCE S256 required")
            hint = (query.get("login_hint") or "").lower()
            address = self.sign_in_as or (hint if hint in self.users else None)
            if not address or address.lower() not in self.users:
                return self._error_page(400, "No account", "Set fake.sign_in_as to an account.")
            user = self.user(address)
            request_id = secrets.token_urlsafe(16)
            self.consents[request_id] = {**query, "address": user.address, "tenant": tenant}
        consent = f"/{quote(tenant)}/oauth2/v2.0/consent?request={request_id}"
        scopes = "".join(
            f"<li>{html.escape(scope)}</li>" for scope in query["scope"].split() if scope
        )
        return Answer.page(
            200,
            "<!doctype html><html><head><meta charset='utf-8'><title>Permissions requested"
            "</title></head><body><h1>Permissions requested</h1>"
            f"<p>Signed in as <strong id='account'>{html.escape(user.address)}</strong></p>"
            f"<p>Postkamer would like to:</p><ul id='scopes'>{scopes}</ul>"
            f'<p><a id="allow" href="{html.escape(consent)}&amp;decision=allow">Allow</a> '
            f'<a id="deny" href="{html.escape(consent)}&amp;decision=deny">Cancel</a></p>'
            "</body></html>",
        )

    def _consent_decision(self, query: dict[str, str]) -> Answer:
        with self.lock:
            request = self.consents.pop(query.get("request", ""), None)
            if request is None:
                return self._error_page(400, "Expired", "This consent request is unknown.")
            redirect_uri = request["redirect_uri"]
            if query.get("decision") == "allow":
                code = secrets.token_urlsafe(32)
                self.codes[code] = CodeGrant(
                    address=request["address"],
                    redirect_uri=redirect_uri,
                    challenge=request["code_challenge"],
                    nonce=request["nonce"],
                    scopes=frozenset(request["scope"].split()),
                )
                params = {
                    "code": code,
                    "state": request["state"],
                    "session_state": str(uuid.uuid4()),
                }
            else:
                params = {
                    "error": "access_denied",
                    "error_description": "AADSTS65004: User declined to consent to access the app.",
                    "state": request["state"],
                }
        separator = "&" if "?" in redirect_uri else "?"
        return Answer(302, headers={"Location": redirect_uri + separator + urlencode(params)})

    @staticmethod
    def _token_error(status: int, error: str, description: str, codes: list[int]) -> Answer:
        return Answer.json(
            status,
            {
                "error": error,
                "error_description": f"{description}\r\nTrace ID: {uuid.uuid4()}",
                "error_codes": codes,
                "timestamp": _iso(datetime.now(UTC)),
            },
        )

    def _token(self, headers: dict[str, str], body: bytes) -> Answer:
        form = {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
        client_id, secret = form.get("client_id"), form.get("client_secret")
        basic = headers.get("authorization", "")
        if basic.startswith("Basic "):
            client_id, _, secret = base64.b64decode(basic[6:]).decode().partition(":")
        with self.lock:
            self.token_requests.append(
                {k: v for k, v in form.items() if k in ("grant_type", "scope", "redirect_uri")}
            )
            if client_id != self.client_id or secret != self.client_secret:
                return self._token_error(
                    401,
                    "invalid_client",
                    "AADSTS7000215: Invalid client secret provided.",
                    [7000215],
                )
            grant_type = form.get("grant_type")
            if grant_type == "authorization_code":
                return self._redeem_code(form)
            if grant_type == "refresh_token":
                return self._redeem_refresh_token(form)
            return self._token_error(
                400, "unsupported_grant_type", "AADSTS70003: unsupported grant type", [70003]
            )

    def _redeem_code(self, form: dict[str, str]) -> Answer:
        grant = self.codes.get(form.get("code", ""))
        if grant is None or grant.used:
            return self._token_error(
                400,
                "invalid_grant",
                "AADSTS54005: OAuth2 Authorization code was already redeemed or is unknown.",
                [54005],
            )
        grant.used = True  # single use, even when the rest of the request is wrong
        if form.get("redirect_uri") != grant.redirect_uri:
            return self._token_error(
                400, "invalid_grant", "AADSTS50148: redirect_uri does not match.", [50148]
            )
        verifier = form.get("code_verifier", "")
        if _b64url(hashlib.sha256(verifier.encode()).digest()) != grant.challenge:
            return self._token_error(
                400,
                "invalid_grant",
                "AADSTS501481: The Code_Verifier does not match the code_challenge.",
                [501481],
            )
        return self._issue(grant.address, grant.scopes, nonce=grant.nonce)

    def _redeem_refresh_token(self, form: dict[str, str]) -> Answer:
        token = form.get("refresh_token", "")
        grant = self.refresh_tokens.get(token)
        if grant is None or not grant.active:
            return self._token_error(
                400,
                "invalid_grant",
                "AADSTS50173: The provided grant has expired due to it being revoked, a fresh "
                "auth token is needed.",
                [50173],
            )
        grant.active = False  # Microsoft rotates: the old refresh token is used up
        return self._issue(grant.address, grant.scopes, nonce="")

    def _issue(self, address: str, scopes: frozenset[str], *, nonce: str) -> Answer:
        user = self.user(address)
        now = int(time.time())
        access_token = "at-" + secrets.token_urlsafe(24)
        refresh_token = "rt-" + secrets.token_urlsafe(32)
        resource_scopes = frozenset(s for s in scopes if s not in ("openid", "profile"))
        self.access_tokens[access_token] = AccessGrant(
            user.address, resource_scopes, now + self.access_token_lifetime
        )
        self.refresh_tokens[refresh_token] = RefreshGrant(user.address, scopes)
        claims = {
            "aud": self.client_id,
            "iss": f"{self.url}/{TENANT_ID}/v2.0",
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "name": user.name,
            "oid": user.id,
            "preferred_username": user.address,
            "sub": _b64url(hashlib.sha256(user.id.encode()).digest()),
            "tid": TENANT_ID,
            "ver": "2.0",
        }
        if nonce:
            claims["nonce"] = nonce
        id_token = ".".join(
            [
                _b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode()),
                _b64url(json.dumps(claims).encode()),
                "",  # unsigned: msal does not validate id_token signatures
            ]
        )
        return Answer.json(
            200,
            {
                "token_type": "Bearer",
                "scope": " ".join(sorted(s for s in scopes if s != "offline_access")),
                "expires_in": self.access_token_lifetime,
                "ext_expires_in": self.access_token_lifetime,
                "access_token": access_token,
                "refresh_token": refresh_token,
                "id_token": id_token,
                "client_info": _b64url(json.dumps({"uid": user.id, "utid": TENANT_ID}).encode()),
            },
        )

    # --- Graph ------------------------------------------------------------------------------------

    def _take_failure(self, path: str) -> Failure | None:
        with self.lock:
            for failure in self.failures:
                if failure.match in unquote(path):
                    self.failures.remove(failure)
                    return failure
        return None

    def _graph(
        self,
        method: str,
        path: str,
        parts: list[str],
        query: dict[str, str],
        headers: dict[str, str],
        body: bytes,
    ) -> Answer:
        failure = self._take_failure(path)
        if failure is not None:
            extra = (
                {"Retry-After": str(failure.retry_after)} if failure.retry_after is not None else {}
            )
            return Answer.graph_error(
                failure.status, failure.code, "Injected by the test.", **extra
            )
        bearer = headers.get("authorization", "")
        with self.lock:
            grant = self.access_tokens.get(bearer[7:]) if bearer.startswith("Bearer ") else None
            if grant is None or grant.expires_at < time.time() or self.reject_all_tokens:
                return Answer.graph_error(
                    401,
                    "InvalidAuthenticationToken",
                    "Access token has expired or is not yet valid.",
                    **{"WWW-Authenticate": 'Bearer realm="", error="invalid_token"'},
                )
            caller = self.user(grant.address)
            if parts[:1] == ["subscriptions"]:  # change notifications: microsoft_push.py
                owner, rest = caller, parts
            elif parts[:1] == ["me"]:
                owner, rest = caller, parts[1:]
            elif parts[:1] == ["users"] and len(parts) >= 2:
                owner = self.users.get(parts[1].lower())
                if owner is None:
                    return Answer.graph_error(
                        404, "ErrorInvalidUser", f"The requested user '{parts[1]}' is invalid."
                    )
                shared = (
                    "Mail.ReadWrite.Shared" in grant.scopes and caller.address in owner.delegates
                )
                if owner is not caller and not shared:
                    return Answer.graph_error(
                        403,
                        "ErrorAccessDenied",
                        "Access is denied. Check credentials and try again.",
                    )
                rest = parts[2:]
            else:
                return Answer.graph_error(400, "BadRequest", f"Unsupported path {path}")
            key = owner.address.lower()
            self.in_flight[key] = self.in_flight.get(key, 0) + 1
            self.max_in_flight[key] = max(self.max_in_flight.get(key, 0), self.in_flight[key])
        try:
            if self.graph_delay:
                time.sleep(self.graph_delay)
            if rest[:1] == ["subscriptions"] and parts[:1] == ["subscriptions"]:
                return self.push.route(method, caller, grant, rest, body)
            if rest[:1] in (["calendarView"], ["events"]):
                from tests.support.fakes.microsoft_calendar import calendar_route

                return calendar_route(self, method, owner, grant, rest, query, body)
            return self._mail(method, path, owner, grant, rest, query, headers, body)
        finally:
            with self.lock:
                self.in_flight[key] -= 1

    def _mail(
        self,
        method: str,
        path: str,
        owner: FakeUser,
        grant: AccessGrant,
        rest: list[str],
        query: dict[str, str],
        headers: dict[str, str],
        body: bytes,
    ) -> Answer:
        needs_mail = "Mail.ReadWrite" in grant.scopes or "Mail.ReadWrite.Shared" in grant.scopes
        if rest and not needs_mail:
            return Answer.graph_error(403, "ErrorAccessDenied", "Mail.ReadWrite was not granted.")
        if method == "GET" and not rest:
            return self._profile(owner, query)
        is_delta = len(rest) == 4 and rest[2:] == ["messages", "delta"]
        if method == "GET" and is_delta and rest[0] == "mailFolders":
            return self._delta(path, owner, rest[1].lower(), query, headers)
        if (
            method == "GET"
            and len(rest) == 3
            and rest[0] == "mailFolders"
            and rest[2] == "messages"
        ):
            return self._list(path, owner, rest[1].lower(), query)
        if rest == ["messages"] and method == "POST":
            return self._create_draft(owner, headers, body)
        if len(rest) == 2 and rest[0] == "messages":
            return self._message(method, owner, rest[1], query)
        if len(rest) == 3 and rest[0] == "messages" and rest[2] == "$value" and method == "GET":
            message = owner.messages.get(rest[1])
            if message is None:
                return Answer.graph_error(
                    404, "ErrorItemNotFound", "The specified object was not found."
                )
            return Answer(200, message.raw, {"Content-Type": "text/plain"})
        if len(rest) == 3 and rest[0] == "messages" and rest[2] == "send" and method == "POST":
            if "Mail.Send" not in grant.scopes and "Mail.Send.Shared" not in grant.scopes:
                return Answer.graph_error(403, "ErrorAccessDenied", "Mail.Send was not granted.")
            return self._send(owner, rest[1])
        return Answer.graph_error(400, "BadRequest", f"Unsupported {method} {path}")

    def _profile(self, user: FakeUser, query: dict[str, str]) -> Answer:
        profile = {
            "id": user.id,
            "displayName": user.name,
            "mail": user.mail,
            "userPrincipalName": user.address,
        }
        if query.get("$select"):
            wanted = query["$select"].split(",")
            profile = {k: v for k, v in profile.items() if k in wanted or k == "id"}
        return Answer.json(
            200, {"@odata.context": f"{self.graph_endpoint}/$metadata#users/$entity", **profile}
        )

    @staticmethod
    def _render(message: FakeMessage, select: list[str] | None) -> dict:
        # Values are computed only when selected: the subject parses the whole
        # message, which for a 10,000-message delta round made the fake the bottleneck.
        getters = {
            "receivedDateTime": lambda: _iso(message.received),
            "internetMessageId": lambda: message.internet_message_id,
            "subject": lambda: message.subject,
            "isDraft": lambda: message.is_draft,
            "parentFolderId": lambda: message.folder,
        }
        fields = {k: get() for k, get in getters.items() if not select or k in select}
        return {
            "@odata.type": "#microsoft.graph.message",
            "@odata.etag": f'W/"{message.seq}"',
            "id": message.id,
            **fields,
        }

    @staticmethod
    def _page_size(headers: dict[str, str], limit: int) -> int:
        match = re.search(r"odata\.maxpagesize=(\d+)", headers.get("prefer", ""))
        return max(1, min(int(match.group(1)) if match else DEFAULT_PAGE_SIZE, limit))

    def _delta(
        self,
        path: str,
        owner: FakeUser,
        folder: str,
        query: dict[str, str],
        headers: dict[str, str],
    ) -> Answer:
        if folder not in WELL_KNOWN_FOLDERS:
            return Answer.graph_error(400, "ErrorInvalidIdMalformed", f"Unknown folder {folder}")
        gone = Answer.graph_error(
            410, "SyncStateNotFound", "The sync state generation is not found or has expired."
        )
        with self.lock:
            if "$skiptoken" in query:
                state = self.skip_tokens.pop(query["$skiptoken"], None)
                if state is None or state.path != path:
                    return gone
            elif "$deltatoken" in query:
                previous = self.delta_tokens.get(query["$deltatoken"])
                if previous is None or previous.path != path:
                    return gone
                state = RoundState(
                    path, owner.address, folder, self._seq, previous.since, previous.select
                )
                changed = [
                    m
                    for m in owner.messages.values()
                    if m.folder == folder
                    and m.seq > previous.watermark
                    and (previous.since is None or m.received >= previous.since)
                ]
                state.entries = [
                    self._render(m, previous.select) for m in sorted(changed, key=lambda m: m.seq)
                ] + [
                    {
                        "@odata.type": "#microsoft.graph.message",
                        "id": graph_id,
                        "@removed": {"reason": "deleted"},
                    }
                    for seq, graph_id, where in owner.removed
                    if where == folder and seq > previous.watermark
                ]
            else:
                since = None
                if "$filter" in query:
                    match = re.fullmatch(r"receivedDateTime ge (\S+)", query["$filter"].strip())
                    if not match:
                        return Answer.graph_error(
                            400,
                            "ErrorInvalidUrlQueryFilter",
                            "Only receivedDateTime ge is supported.",
                        )
                    since = _parse_iso(match.group(1))
                select = query["$select"].split(",") if query.get("$select") else None
                state = RoundState(path, owner.address, folder, self._seq, since, select)
                # Newest first, as Graph tends to list them: clients must not rely on order.
                listed = sorted(
                    (
                        m
                        for m in owner.messages.values()
                        if m.folder == folder and (since is None or m.received >= since)
                    ),
                    key=lambda m: m.received,
                    reverse=True,
                )
                state.entries = [self._render(m, select) for m in listed]
            size = self._page_size(headers, self.max_page_size)
            page, state.entries = state.entries[:size], state.entries[size:]
            body: dict[str, Any] = {
                "@odata.context": f"{self.graph_endpoint}/$metadata#Collection(message)",
                "value": page,
            }
            if state.entries:
                token = secrets.token_urlsafe(16)
                self.skip_tokens[token] = state
                body["@odata.nextLink"] = f"{self.url}{path}?$skiptoken={token}"
            else:
                token = secrets.token_urlsafe(16)
                self.delta_tokens[token] = state
                body["@odata.deltaLink"] = f"{self.url}{path}?$deltatoken={token}"
        return Answer.json(200, body)

    def _list(self, path: str, owner: FakeUser, folder: str, query: dict[str, str]) -> Answer:
        if folder not in WELL_KNOWN_FOLDERS:
            return Answer.graph_error(400, "ErrorInvalidIdMalformed", f"Unknown folder {folder}")
        expression = query.get("$filter", "").strip()
        with self.lock:
            messages = [m for m in owner.messages.values() if m.folder == folder]
        if expression:
            by_id = re.fullmatch(r"internetMessageId eq '((?:[^']|'')*)'", expression)
            by_date = re.fullmatch(
                r"(?:receivedDateTime ge (\S+))?(?: and )?(?:receivedDateTime lt (\S+))?",
                expression,
            )
            if by_id:
                wanted = by_id.group(1).replace("''", "'")
                messages = [m for m in messages if m.internet_message_id == wanted]
            elif by_date:
                since, before = (_parse_iso(v) if v else None for v in by_date.groups())
                messages = [
                    m
                    for m in messages
                    if (since is None or m.received >= since)
                    and (before is None or m.received < before)
                ]
            else:
                return Answer.graph_error(
                    400, "ErrorInvalidUrlQueryFilter", f"Unsupported $filter {expression}"
                )
        descending = query.get("$orderby", "receivedDateTime desc").endswith("desc")
        messages.sort(key=lambda m: m.received, reverse=descending)
        top = min(int(query.get("$top") or DEFAULT_PAGE_SIZE), self.max_page_size)
        skip = int(query.get("$skip") or 0)
        select = query["$select"].split(",") if query.get("$select") else None
        body: dict[str, Any] = {
            "@odata.context": f"{self.graph_endpoint}/$metadata#Collection(message)",
            "value": [self._render(m, select) for m in messages[skip : skip + top]],
        }
        if skip + top < len(messages):
            body["@odata.nextLink"] = f"{self.url}{path}?" + urlencode(
                {**query, "$skip": str(skip + top)}, quote_via=quote
            )
        return Answer.json(200, body)

    def _create_draft(self, owner: FakeUser, headers: dict[str, str], body: bytes) -> Answer:
        if not headers.get("content-type", "").startswith("text/plain"):
            return Answer.graph_error(
                415, "UnsupportedMediaType", "The fake only creates drafts from base64 MIME."
            )
        try:
            raw = base64.b64decode(body.strip(), validate=True)
        except (binascii.Error, ValueError):
            return Answer.graph_error(
                400,
                "ErrorMimeContentInvalidBase64String",
                "Invalid base64 string for MIME content.",
            )
        parsed = message_from_bytes(raw)
        message_id = str(parsed.get("Message-ID", "")).strip()
        if self.assign_message_ids or not message_id:
            message_id = make_msgid(domain="fake.outlook.com")
            del parsed["Message-ID"]
            parsed["Message-ID"] = message_id
            raw = parsed.as_bytes()
        with self.lock:
            draft = FakeMessage(
                id=_graph_id(),
                folder="drafts",
                raw=raw,
                internet_message_id=message_id,
                received=datetime.now(UTC),
                seq=self._next_seq(),
                is_draft=True,
            )
            owner.messages[draft.id] = draft
        return Answer.json(
            201,
            {
                "@odata.context": f"{self.graph_endpoint}/$metadata#messages/$entity",
                **self._render(draft, None),
                "createdDateTime": _iso(draft.received),
            },
        )

    def _message(
        self, method: str, owner: FakeUser, graph_id: str, query: dict[str, str]
    ) -> Answer:
        with self.lock:
            message = owner.messages.get(graph_id)
            if message is None:
                return Answer.graph_error(
                    404, "ErrorItemNotFound", "The specified object was not found."
                )
            if method == "DELETE":
                del owner.messages[graph_id]
                owner.removed.append((self._next_seq(), graph_id, message.folder))
                return Answer(204)
            if method == "GET":
                select = query["$select"].split(",") if query.get("$select") else None
                return Answer.json(200, self._render(message, select))
        return Answer.graph_error(405, "ErrorInvalidRequest", f"{method} is not supported here.")

    def _send(self, owner: FakeUser, graph_id: str) -> Answer:
        with self.lock:
            draft = owner.messages.get(graph_id)
            if draft is None or not draft.is_draft:
                return Answer.graph_error(
                    404, "ErrorItemNotFound", "The specified object was not found."
                )
            recipients = draft.recipients()
            if not recipients:
                return Answer.graph_error(
                    400, "ErrorInvalidRecipients", "At least one recipient isn't valid."
                )
        # Microsoft finishes the send after the client stopped waiting for the answer.
        if self.send_delay:
            time.sleep(self.send_delay)
        if self._send_gate is not None:
            self._send_gate.wait(30)
        with self.lock:
            owner.messages.pop(graph_id, None)
            owner.removed.append((self._next_seq(), graph_id, "drafts"))
            sent = FakeMessage(
                id=_graph_id(),  # the copy in Sent Items has an id of its own
                folder="sentitems",
                raw=draft.raw,
                internet_message_id=draft.internet_message_id,
                received=datetime.now(UTC),
                seq=self._next_seq(),
            )
            owner.messages[sent.id] = sent
            self.push.changed(owner, sent, "created")
            self.sent.append(
                SentMail(owner.address, draft.raw, draft.internet_message_id, recipients)
            )
            for address in recipients:  # mail between accounts of the tenant arrives
                if address.lower() in self.users:
                    self.deliver(address, draft.raw)
        return Answer(202)


# --- Fixtures ------------------------------------------------------------------------------------------


@pytest.fixture
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any name lookup beyond 127.0.0.1: nothing in these tests may leave the machine."""
    real = socket.getaddrinfo

    def guarded(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name is not None and name not in LOOPBACK_NAMES:
            raise socket.gaierror(socket.EAI_NONAME, f"blocked in tests (not loopback): {name}")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)


@pytest.fixture
def fake_microsoft(mail_ca: MailCA, settings: Any) -> Iterator[FakeMicrosoft]:
    """A running fake, with Postkamer's Microsoft settings pointing at it."""
    fake = FakeMicrosoft(mail_ca).start()
    settings.MICROSOFT_CLIENT_ID = fake.client_id
    settings.MICROSOFT_CLIENT_SECRET = fake.client_secret
    settings.MICROSOFT_AUTHORITY = fake.authority
    settings.GRAPH_API_ENDPOINT = fake.graph_endpoint
    settings.OAUTH_CA_FILE = fake.ca_path
    try:
        yield fake
    finally:
        fake.release_sends()
        fake.stop()
    assert not fake.errors, fake.errors
