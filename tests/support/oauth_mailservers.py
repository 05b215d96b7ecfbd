"""Real mail servers that take XOAUTH2 logins: Dovecot with an OAuth2 passdb and aiosmtpd.

One ``TokenAuthority`` plays the sign-in provider's token store: it issues
access tokens for a user name, revokes them, and answers token introspection
(RFC 7662 style) over a small stdlib HTTP server on 127.0.0.1. Dovecot's
``oauth2`` passdb posts each XOAUTH2 token there (``introspection_mode =
post``); the aiosmtpd handler asks the authority directly.

Dovecot (tests/support/mailservers.py's ``DovecotServer``) keeps its password logins;
this subclass adds ``xoauth2``/``oauthbearer`` and an ``oauth2`` passdb limited
to those mechanisms, in front of the passwd-file one. The user database (mail
location) stays the static one of the base class, so every user name that the
authority vouches for gets a Maildir.

Use the fixtures through ``pytest_plugins = ["tests.support.oauth_mailservers"]``.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import shutil
import tempfile
import threading
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import MISSING, SMTP, AuthResult

from inboxes.providers.imap.connection import ServerSettings
from tests.support.mailservers import (
    DOVECOT_BINARY,
    LOCALHOST,
    DovecotServer,
    MailCA,
    SMTPTestServer,
    _Handler,
)

INTROSPECTION_PATH = "/introspect"


# --- The sign-in provider's side -----------------------------------------------------------


class TokenAuthority:
    """Access tokens and whom they belong to; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens: dict[str, str] = {}
        self.introspections: list[str] = []  # tokens Dovecot asked about, in order
        # While True the token check is down: introspection answers 503 and the
        # SMTP server 454, as when the provider has an outage.
        self.outage = False

    def issue(self, username: str) -> str:
        token = "ya29." + secrets.token_urlsafe(24)
        with self._lock:
            self._tokens[token] = username
        return token

    def revoke(self, token: str) -> None:
        with self._lock:
            self._tokens.pop(token, None)

    def revoke_user(self, username: str) -> None:
        with self._lock:
            for token in [t for t, user in self._tokens.items() if user == username]:
                del self._tokens[token]

    def owner(self, token: str) -> str | None:
        with self._lock:
            return self._tokens.get(token)

    def introspect(self, token: str) -> dict[str, Any]:
        with self._lock:
            self.introspections.append(token)
            username = self._tokens.get(token)
        if username is None:
            return {"active": False}
        return {"active": True, "username": username, "scope": "https://mail.google.com/"}


class _IntrospectionHandler(BaseHTTPRequestHandler):
    server: _IntrospectionHTTPServer

    def do_POST(self) -> None:  # noqa: N802 - http.server's hook name
        if self.path.split("?", 1)[0] != INTROSPECTION_PATH:
            self._answer(404, {"error": "not_found"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        form = urllib.parse.parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
        token = (form.get("token") or [""])[0]
        if self.server.authority.outage:
            self._answer(503, {"error": "temporarily_unavailable"})
            return
        self._answer(200, self.server.authority.introspect(token))

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        pass  # keep test output quiet


class _IntrospectionHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, authority: TokenAuthority) -> None:
        self.authority = authority
        super().__init__((LOCALHOST, 0), _IntrospectionHandler)


class IntrospectionServer:
    """``POST /introspect`` with ``token=...`` -> ``{"active": ..., "username": ...}``."""

    def __init__(self, authority: TokenAuthority) -> None:
        self._httpd = _IntrospectionHTTPServer(authority)
        self.port: int = self._httpd.server_address[1]
        self.url = f"http://{LOCALHOST}:{self.port}{INTROSPECTION_PATH}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


# --- Dovecot -----------------------------------------------------------------------------


_AUTH_MECHANISMS = re.compile(r"^auth_mechanisms\s*=.*$", re.MULTILINE)
_FIRST_PASSDB = re.compile(r"^passdb\s*\{", re.MULTILINE)


class OAuthDovecotServer(DovecotServer):
    """Dovecot that also takes XOAUTH2 and OAUTHBEARER, checked by token introspection."""

    def __init__(self, root: Path, mail_ca: MailCA, introspection_url: str) -> None:
        # The base class writes its configuration in __init__ (through _config).
        self.introspection_url = introspection_url
        super().__init__(root, mail_ca)

    def _config(self, cert_path: Path, key_path: Path) -> str:
        oauth2_conf = self.root / "dovecot-oauth2.conf.ext"
        oauth2_conf.write_text(
            f"""\
# Dovecot 2.3: without tokeninfo_url the token goes straight to introspection.
introspection_mode = post
introspection_url = {self.introspection_url}
username_attribute = username
# Keep the user name as the token's owner has it (the default %Lu lower-cases).
username_format = %u
active_attribute = active
active_value = true
timeout_msecs = 5000
"""
        )
        oauth2_conf.chmod(0o644)
        mechanisms = "auth_mechanisms = plain login xoauth2 oauthbearer"
        passdb = f"""\
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {oauth2_conf}
}}
"""
        config = super()._config(cert_path, key_path)
        config, found = _AUTH_MECHANISMS.subn(mechanisms, config, count=1)
        if not found:
            config += mechanisms + "\n"
        # Before the password passdb: PLAIN/LOGIN skip this one (mechanisms filter),
        # and an XOAUTH2 token is never compared with a password.
        match = _FIRST_PASSDB.search(config)
        if match:
            config = config[: match.start()] + passdb + config[match.start() :]
        else:
            config += passdb
        return config

    def oauth_settings(self, username: str, security: str = "ssl") -> ServerSettings:
        """IMAP settings for an XOAUTH2 login (no password)."""
        return self.imap_settings(username, "", security)


# --- SMTP ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class XOAuth2Login:
    username: str
    token: str
    accepted: bool


def xoauth2_decode(blob: bytes) -> tuple[str, str]:
    """(user, bearer token) from a decoded XOAUTH2 initial response."""
    fields: dict[str, str] = {}
    for part in blob.decode("utf-8", "replace").split("\x01"):
        key, sep, value = part.partition("=")
        if sep:
            fields[key] = value
    scheme, _, token = fields.get("auth", "").partition(" ")
    return fields.get("user", ""), token if scheme.lower() == "bearer" else ""


class _OAuthHandler(_Handler):
    """The base handler plus an XOAUTH2 mechanism (aiosmtpd finds ``auth_*`` methods)."""

    owner: OAuthSMTPServer

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:  # noqa: N802
        if len(args) > 1:
            try:
                blob = base64.b64decode(args[1], validate=True)
            except ValueError:
                await server.push("501 5.5.2 Can't decode base64")
                return AuthResult(success=False, handled=True)
        else:
            response = await server.challenge_auth("")
            if response is MISSING:
                return AuthResult(success=False, handled=True)
            blob = response
        username, token = xoauth2_decode(blob)
        if self.owner.authority.outage:
            return AuthResult(
                success=False, handled=False, message="454 4.7.0 Temporary authentication failure"
            )
        accepted = bool(token) and self.owner.authority.owner(token) == username
        self.owner._record_login(XOAuth2Login(username, token, accepted))
        if accepted:
            return AuthResult(success=True, auth_data=username)
        # As Gmail does: a JSON error as a challenge, an empty answer, then 535.
        error = json.dumps(
            {"status": "401", "schemes": "bearer", "scope": "https://mail.google.com/"}
        )
        answer = await server.challenge_auth(error)
        if answer is MISSING:
            return AuthResult(success=False, handled=True)
        return AuthResult(
            success=False,
            handled=False,
            message="535 5.7.8 Username and Password not accepted (invalid token)",
        )


class OAuthSMTPServer(SMTPTestServer):
    """The test SMTP server, also taking XOAUTH2 with the authority's tokens."""

    def __init__(self, mail_ca: MailCA, authority: TokenAuthority) -> None:
        self.authority = authority
        self._logins: list[XOAuth2Login] = []
        super().__init__(mail_ca)
        handler = _OAuthHandler(self)
        # Not started yet: each controller builds its SMTP sessions from .handler.
        for controller in self._controllers:
            controller.handler = handler

    def _record_login(self, login: XOAuth2Login) -> None:
        with self._lock:
            self._logins.append(login)

    @property
    def xoauth2_logins(self) -> list[XOAuth2Login]:
        """Every XOAUTH2 attempt so far, oldest first (a copy)."""
        with self._lock:
            return list(self._logins)

    def oauth_settings(self, username: str, security: str = "starttls") -> ServerSettings:
        return self.smtp_settings(username, "", security)


# --- Fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def token_authority() -> TokenAuthority:
    return TokenAuthority()


@pytest.fixture(scope="session")
def introspection_server(token_authority: TokenAuthority) -> Iterator[IntrospectionServer]:
    server = IntrospectionServer(token_authority)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def oauth_dovecot(
    mail_ca: MailCA, _mail_tls_settings: None, introspection_server: IntrospectionServer
) -> Iterator[OAuthDovecotServer]:
    if not Path(DOVECOT_BINARY).exists():
        pytest.skip("Dovecot is not installed (Debian package dovecot-imapd)")
    root = Path(tempfile.mkdtemp(prefix="postkamer-oauth-dovecot-"))
    server = OAuthDovecotServer(root, mail_ca, introspection_server.url)
    try:
        server.start()
        yield server
    finally:
        server.stop()  # terminates the Dovecot process it started (by its Popen)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def oauth_smtp_server(
    mail_ca: MailCA, _mail_tls_settings: None, token_authority: TokenAuthority
) -> Iterator[OAuthSMTPServer]:
    server = OAuthSMTPServer(mail_ca, token_authority)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def oauth_user(token_authority: TokenAuthority) -> Iterator[str]:
    """A fresh user name known only through its tokens; revoked afterwards."""
    username = f"o{uuid.uuid4().hex[:16]}"
    yield username
    token_authority.revoke_user(username)
