"""The connection test run before a mailbox is saved, and on demand from the API.

It walks the IMAP connection one step at a time (dns, tcp, tls, auth,
imap_select), then checks the SMTP server in one ``smtp`` step, and stops at the
first failure so the user sees one clear problem. Network and protocol errors
become a failed step with a short sentence; they are never raised.
"""

from __future__ import annotations

import ast
import contextlib
import imaplib
import re
import smtplib
import socket
import ssl
from dataclasses import asdict, dataclass, field
from typing import Any

from inboxes import netguard
from inboxes.providers.imap import connection as mailconn
from inboxes.providers.imap.auth import smtp_xoauth2_login
from inboxes.providers.imap.connection import ServerSettings

STEP_DNS = "dns"
STEP_TCP = "tcp"
STEP_TLS = "tls"
STEP_AUTH = "auth"
STEP_IMAP_SELECT = "imap_select"
STEP_SMTP = "smtp"

# What we expect from a flaky or hostile server, as opposed to a bug of ours.
_EXPECTED_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # includes ssl.SSLError, socket.timeout and StartTLSNotOffered
    imaplib.IMAP4.error,  # includes imapclient's exceptions
    smtplib.SMTPException,
    netguard.HostNotAllowed,
    netguard.HostNotFound,
    EOFError,
    UnicodeError,
    ValueError,
)

# Replacing a one- or two-character password would garble every sentence
# without protecting anything.
_MIN_SCRUB_LENGTH = 4


@dataclass
class StepResult:
    step: str
    server: str  # "imap" | "smtp"
    ok: bool
    detail: str


@dataclass
class ConnectionTestResult:
    steps: list[StepResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(step.ok for step in self.steps)

    @property
    def failed_step(self) -> str | None:
        return next((step.step for step in self.steps if not step.ok), None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "failed_step": self.failed_step,
            "steps": [asdict(step) for step in self.steps],
        }


def _where(server: ServerSettings) -> str:
    return f"{netguard.normalize_host(server.host)} port {server.port}"


def _sentence(text: str) -> str:
    text = text.strip()
    return text[:1].lower() + text[1:] if text else text


def _network_reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):  # socket.timeout is TimeoutError
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset by the server"
    if isinstance(exc, EOFError | ssl.SSLEOFError | ssl.SSLZeroReturnError):
        return "the server closed the connection"
    if isinstance(exc, OSError) and exc.strerror:
        return _sentence(exc.strerror)
    return _sentence(str(exc)) or type(exc).__name__


def _tls_reason(exc: ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        why = exc.verify_message or exc.reason or ""
        return (
            f"certificate verify failed ({why.rstrip('.')})" if why else "certificate verify failed"
        )
    if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError):
        return "the server closed the connection"
    if exc.reason == "WRONG_VERSION_NUMBER":
        # The classic mix-up of implicit TLS with a STARTTLS or plain port.
        return "wrong version number (the port may expect STARTTLS or no TLS)"
    if exc.reason:
        return exc.reason.replace("_", " ").lower()
    return _sentence(str(exc))


# imaplib puts raw bytes in its exceptions, so their text reads "b'[AUTH...]'".
_BYTES_LITERAL = re.compile(r"""(?<!\w)b(['"])((?:\\.|(?!\1).)*)\1""")
_MAX_WORDS = 200


def _unbytes(match: re.Match[str]) -> str:
    try:
        value = ast.literal_eval(match.group(0))
    except (ValueError, SyntaxError):
        return match.group(2)
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _server_words(exc: BaseException) -> str:
    """The server's own reply text, without the client library's decoration."""
    if isinstance(exc, smtplib.SMTPResponseException):
        message = exc.smtp_error
        if isinstance(message, bytes):
            message = message.decode("utf-8", "replace")
        text = f"{exc.smtp_code} {message}"
    else:
        text = str(exc)
        for prefix in ("login failed: ", "select failed: ", "examine failed: "):
            if text.lower().startswith(prefix):
                text = text[len(prefix) :]
        text = _BYTES_LITERAL.sub(_unbytes, text)
    text = " ".join(text.split())
    return text if len(text) <= _MAX_WORDS else text[: _MAX_WORDS - 3] + "..."


def _connect_failure(
    protocol: str, server: ServerSettings, phase: str, exc: BaseException, events: list[str]
) -> str:
    where = _where(server)
    if isinstance(exc, netguard.HostNotAllowed | netguard.HostNotFound):
        return str(exc)
    if isinstance(exc, mailconn.StartTLSNotOffered):
        return str(exc)
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {_tls_reason(exc)}"
    if isinstance(exc, UnicodeError):
        return f"The server at {where} sent something that is not text."
    if isinstance(exc, imaplib.IMAP4.error | smtplib.SMTPResponseException | EOFError):
        words = _server_words(exc)
        return f"The server at {where} did not answer like an {protocol} server: {words}"
    if phase == STEP_TCP and "connected" in events:
        return f"Connected to {where}, but the server did not greet us: {_network_reason(exc)}"
    if phase == STEP_TCP:
        return f"Could not connect to {where}: {_network_reason(exc)}"
    return f"The connection to {where} failed during the TLS handshake: {_network_reason(exc)}"


def _scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if len(secret) >= _MIN_SCRUB_LENGTH:
            text = text.replace(secret, "***")
    return text


def _tls_version(sock: socket.socket | None) -> str:
    version = sock.version() if isinstance(sock, ssl.SSLSocket) else None
    return f" ({version})" if version else ""


def _imap_login(client: Any, server: ServerSettings, oauth_token: str | None) -> str:
    """Log in with the password, or with XOAUTH2 when a token is given; says how."""
    if oauth_token is None:
        client.login(server.username, server.password)
        return f"Logged in as {server.username}."
    if not client.has_capability("AUTH=XOAUTH2"):
        raise _NoXOAuth2()
    client.oauth2_login(server.username, oauth_token)
    return f"Logged in as {server.username} with XOAUTH2."


class _NoXOAuth2(Exception):
    """The server does not offer the XOAUTH2 mechanism."""


def _test_imap(
    server: ServerSettings,
    timeout: float | None,
    steps: list[StepResult],
    oauth_token: str | None = None,
) -> bool:
    def add(step: str, ok: bool, detail: str) -> bool:
        steps.append(StepResult(step=step, server="imap", ok=ok, detail=detail))
        return ok

    host = netguard.normalize_host(server.host)
    encrypted = server.security != mailconn.SECURITY_NONE
    # Which open_imap event completes each step. Without TLS the greeting is
    # part of the tcp step; with TLS it is part of tls (it arrives over TLS, or
    # it must offer STARTTLS).
    phases = [
        (STEP_DNS, "resolved", f"Found {host}."),
        (STEP_TCP, "connected" if encrypted else "ready", f"Connected to {_where(server)}."),
    ]
    if encrypted:
        phases.append((STEP_TLS, "ready", ""))

    events: list[str] = []
    try:
        client = mailconn.open_imap(server, timeout, on_event=events.append)
    except _EXPECTED_ERRORS as exc:
        # The last phase ends with "ready", which open_imap only reports on
        # success, so some phase is always left to take the blame.
        for step, event, detail in phases:
            if event in events:
                add(step, True, detail)
                continue
            return add(step, False, _connect_failure("IMAP", server, step, exc, events))
        return False

    try:
        for step, _event, detail in phases:
            if step == STEP_TLS:
                detail = f"TLS certificate for {host} verified{_tls_version(client.socket())}."
            add(step, True, detail)

        secret = "password" if oauth_token is None else "access token"
        try:
            logged_in = _imap_login(client, server, oauth_token)
        except _NoXOAuth2:
            return add(
                STEP_AUTH, False, "The server does not offer XOAUTH2 sign-in (AUTH=XOAUTH2)."
            )
        except UnicodeError:
            return add(
                STEP_AUTH,
                False,
                f"The user name or {secret} has characters this server's login can't take.",
            )
        except imaplib.IMAP4.error as exc:
            if oauth_token is not None:
                return add(
                    STEP_AUTH,
                    False,
                    f"Sign-in with the access token was refused: {_server_words(exc)}",
                )
            return add(STEP_AUTH, False, f"Login failed: {_server_words(exc)}")
        except _EXPECTED_ERRORS as exc:
            return add(STEP_AUTH, False, f"Login failed: {_network_reason(exc)}")
        add(STEP_AUTH, True, logged_in)

        try:
            info = client.select_folder("INBOX", readonly=True)
        except imaplib.IMAP4.error as exc:
            return add(STEP_IMAP_SELECT, False, f"Could not open INBOX: {_server_words(exc)}")
        except _EXPECTED_ERRORS as exc:
            return add(STEP_IMAP_SELECT, False, f"Could not open INBOX: {_network_reason(exc)}")
        count = int(info.get(b"EXISTS", 0))
        return add(STEP_IMAP_SELECT, True, f"INBOX: {count} message{'' if count == 1 else 's'}")
    finally:
        _close_imap(client)


def _close_imap(client: Any) -> None:
    # The test is over either way; a rude server must not turn it into an error.
    try:
        client.logout()
    except Exception:
        with contextlib.suppress(Exception):
            client.shutdown()


def _test_smtp(
    server: ServerSettings,
    timeout: float | None,
    steps: list[StepResult],
    oauth_token: str | None = None,
) -> bool:
    def fail(part: str, detail: str) -> bool:
        steps.append(
            StepResult(step=STEP_SMTP, server="smtp", ok=False, detail=f"{part}: {detail}")
        )
        return False

    where = _where(server)
    events: list[str] = []
    try:
        smtp = mailconn.open_smtp(server, timeout, on_event=events.append)
    except _EXPECTED_ERRORS as exc:
        if isinstance(exc, mailconn.UnencryptedNotAllowed):
            return fail("security", str(exc))
        if isinstance(exc, netguard.HostNotAllowed | netguard.HostNotFound):
            return fail(STEP_DNS, str(exc))
        if isinstance(exc, smtplib.SMTPHeloError):
            return fail("ehlo", _server_words(exc))
        if isinstance(exc, smtplib.SMTPConnectError):
            if not 200 <= exc.smtp_code < 600:
                # smtplib reports a reply without a status code as -1.
                return fail("greeting", f"{where} did not answer like an SMTP server")
            return fail("greeting", _server_words(exc))
        if "connected" not in events:
            return fail(STEP_TCP, f"could not connect to {where}: {_network_reason(exc)}")
        if isinstance(exc, mailconn.StartTLSNotOffered):
            return fail(STEP_TLS, _sentence(str(exc)))
        if isinstance(exc, ssl.SSLError):
            return fail(STEP_TLS, f"handshake failed: {_tls_reason(exc)}")
        if isinstance(exc, smtplib.SMTPResponseException):
            return fail(STEP_TLS, _server_words(exc))
        if "tls" in events or server.security == mailconn.SECURITY_NONE:
            return fail("greeting", f"{where} did not greet us: {_network_reason(exc)}")
        return fail(STEP_TLS, f"no TLS session with {where}: {_network_reason(exc)}")

    try:
        part = "ehlo"
        code, message = smtp.ehlo()
        if code != 250:
            return fail(part, _server_words(smtplib.SMTPHeloError(code, message)))
        part = STEP_AUTH
        if server.username:
            if not smtp.has_extn("auth"):
                return fail(part, "the server does not offer AUTH")
            try:
                if oauth_token is None:
                    smtp.login(server.username, server.password)
                else:
                    smtp_xoauth2_login(smtp, server.username, oauth_token)
            except UnicodeError:
                secret = "password" if oauth_token is None else "access token"
                return fail(
                    part,
                    f"the user name or {secret} has characters this server's login can't take",
                )
            except smtplib.SMTPNotSupportedError:
                if oauth_token is not None:
                    return fail(part, "the server does not offer XOAUTH2 sign-in")
                return fail(part, "the server offers no login method we support")
            except smtplib.SMTPAuthenticationError as exc:
                if oauth_token is not None:
                    return fail(
                        part, f"sign-in with the access token was refused: {_server_words(exc)}"
                    )
                return fail(part, _server_words(exc))
            except smtplib.SMTPResponseException as exc:
                return fail(part, _server_words(exc))
        tls = ""
        if server.security != mailconn.SECURITY_NONE:
            tls = f" over TLS{_tls_version(smtp.sock)}"
        login = f", logged in as {server.username}" if server.username else ""
        if login and oauth_token is not None:
            login += " with XOAUTH2"
        steps.append(
            StepResult(
                step=STEP_SMTP,
                server="smtp",
                ok=True,
                detail=f"Connected to {where}{tls}{login}.",
            )
        )
        return True
    except _EXPECTED_ERRORS as exc:
        return fail(part, _network_reason(exc))
    finally:
        with contextlib.suppress(Exception):
            smtp.quit()
        with contextlib.suppress(Exception):
            smtp.close()


def run_connection_test(
    *,
    imap: ServerSettings,
    smtp: ServerSettings,
    timeout: float | None = None,
    oauth_token: str | None = None,
) -> ConnectionTestResult:
    """Check both servers step by step; stop at the first failed step.

    With ``oauth_token`` (an OAuth access token) both servers are logged in to
    with XOAUTH2 and the settings' passwords are not used.
    """
    result = ConnectionTestResult()
    if _test_imap(imap, timeout, result.steps, oauth_token):
        _test_smtp(smtp, timeout, result.steps, oauth_token)
    secrets = [imap.password, smtp.password, oauth_token or ""]
    for step in result.steps:
        step.detail = _scrub(step.detail, secrets)
    return result
