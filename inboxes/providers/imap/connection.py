"""IMAP and SMTP connections pinned to addresses that passed the SSRF guard.

The standard clients resolve the host name themselves when they connect. Here the
name is resolved and checked once by :mod:`inboxes.netguard`, the TCP connection
goes to a checked address, and TLS still verifies the certificate against the
name the user typed (never the IP), so DNS rebinding cannot redirect us and a
certificate for the wrong name is still refused.

Both openers accept ``on_event``, called with "resolved", "connected", "tls" and
"ready" as each phase completes, so the connection test can tell which phase
failed without this module knowing about its steps.

``server_text`` and ``reply_text`` turn what a server answered into text.
"""

from __future__ import annotations

import contextlib
import imaplib
import logging
import smtplib
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field

import imapclient
from django.conf import settings

from inboxes import netguard

SECURITY_SSL = "ssl"
SECURITY_STARTTLS = "starttls"
SECURITY_NONE = "none"
SECURITY_CHOICES = (SECURITY_SSL, SECURITY_STARTTLS, SECURITY_NONE)

EventCallback = Callable[[str], None]


class UnencryptedNotAllowed(netguard.HostNotAllowed):
    def __init__(self) -> None:
        super().__init__("Unencrypted connections are not allowed")


class StartTLSNotOffered(ConnectionError):
    """The server did not advertise STARTTLS; we never fall back to plain text."""

    def __init__(self, protocol: str) -> None:
        self.protocol = protocol
        super().__init__(f"The {protocol} server does not offer STARTTLS.")


@dataclass(frozen=True)
class ServerSettings:
    host: str
    port: int
    security: str  # "ssl" | "starttls" | "none"
    username: str
    password: str = field(repr=False)

    def __post_init__(self) -> None:
        if self.security not in SECURITY_CHOICES:
            raise ValueError(f"security must be one of {', '.join(SECURITY_CHOICES)}")

    def __repr__(self) -> str:
        # Settings objects end up in logs and tracebacks; the password must not.
        return (
            f"ServerSettings(host={self.host!r}, port={self.port!r}, "
            f"security={self.security!r}, username={self.username!r}, password='***')"
        )


def server_text(value: object) -> str:
    """A server's words (imaplib and smtplib hand them over as bytes) as text."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def reply_text(code: int, message: object) -> str:
    """An SMTP reply as one line: "550 5.1.1 No such user"."""
    return f"{code} {server_text(message)}".strip()


def _emit(on_event: EventCallback | None, event: str) -> None:
    if on_event is not None:
        on_event(event)


def _resolve_timeout(timeout: float | None) -> float:
    return float(settings.MAIL_CONNECT_TIMEOUT) if timeout is None else float(timeout)


def _require_encryption_allowed(server: ServerSettings) -> None:
    # Plain text is only for local test servers; anywhere else it leaks the password.
    if server.security == SECURITY_NONE and not settings.ALLOW_PRIVATE_MAIL_HOSTS:
        raise UnencryptedNotAllowed()


def _open_pinned_socket(
    host: str,
    port: int,
    timeout: float,
    implicit_tls: ssl.SSLContext | None,
    on_event: EventCallback | None,
) -> socket.socket:
    addresses = netguard.resolve_checked(host, port)
    _emit(on_event, "resolved")
    sock = netguard.connect_resolved(addresses, port, timeout)
    _emit(on_event, "connected")
    if implicit_tls is not None:
        try:
            sock = implicit_tls.wrap_socket(sock, server_hostname=host)
        except BaseException:
            sock.close()
            raise
        _emit(on_event, "tls")
    return sock


class _PinnedIMAP4(imaplib.IMAP4):
    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout: float,
        implicit_tls: ssl.SSLContext | None,
        on_event: EventCallback | None,
    ) -> None:
        self._pinned_timeout = timeout
        self._implicit_tls = implicit_tls
        self._on_event = on_event
        super().__init__(host, port, timeout)

    def _create_socket(self, timeout: float | None = None) -> socket.socket:
        # imaplib's STARTTLS later wraps with server_hostname=self.host, which
        # stays the name, not the address we connected to.
        return _open_pinned_socket(
            self.host,
            self.port,
            timeout if timeout else self._pinned_timeout,
            self._implicit_tls,
            self._on_event,
        )


class PinnedIMAPClient(imapclient.IMAPClient):
    """IMAPClient whose connection goes through the SSRF guard."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        implicit_tls: bool,
        ssl_context: ssl.SSLContext,
        timeout: float,
        on_event: EventCallback | None = None,
    ) -> None:
        self._on_event = on_event
        super().__init__(host, port, ssl=implicit_tls, ssl_context=ssl_context, timeout=timeout)
        # IMAPClient sets imaplib's debug level to 5 to send the traffic to the
        # "imapclient.imaplib" logger, and at that level imaplib formats every
        # response before the logger can drop it: the repr of each fetched message,
        # twice (about 13% of the CPU of a process that fetches). Only when that
        # logger keeps them.
        if not logging.getLogger("imapclient.imaplib").isEnabledFor(logging.DEBUG):
            self._imap.debug = 0

    def _create_IMAP4(self) -> imaplib.IMAP4:
        connect_timeout = getattr(self._timeout, "connect", None)
        return _PinnedIMAP4(
            self.host,
            self.port,
            timeout=_resolve_timeout(connect_timeout),
            implicit_tls=self.ssl_context if self.ssl else None,
            on_event=self._on_event,
        )


def open_imap(
    server: ServerSettings,
    timeout: float | None = None,
    *,
    on_event: EventCallback | None = None,
) -> imapclient.IMAPClient:
    """Connect (not log in) to an IMAP server, with TLS as ``server.security`` asks."""
    _require_encryption_allowed(server)
    seconds = _resolve_timeout(timeout)
    context = netguard.mail_ssl_context()
    client = PinnedIMAPClient(
        netguard.normalize_host(server.host),
        server.port,
        implicit_tls=server.security == SECURITY_SSL,
        ssl_context=context,
        timeout=seconds,
        on_event=on_event,
    )
    try:
        if server.security == SECURITY_STARTTLS:
            if not client.has_capability("STARTTLS"):
                raise StartTLSNotOffered("IMAP")
            client.starttls(ssl_context=context)
            _emit(on_event, "tls")
    except BaseException:
        with contextlib.suppress(OSError):
            client.shutdown()
        raise
    _emit(on_event, "ready")
    return client


def _ehlo_name(sock: socket.socket) -> str:
    # An address literal is always a valid EHLO argument (RFC 5321 4.1.3), and
    # avoids smtplib's socket.getfqdn(), a reverse lookup that can stall.
    ip = sock.getsockname()[0]
    return f"[IPv6:{ip}]" if ":" in ip else f"[{ip}]"


class PinnedSMTP(smtplib.SMTP):
    """smtplib.SMTP whose connection goes through the SSRF guard.

    Implicit TLS is done here (instead of subclassing SMTP_SSL) so that both
    modes share one socket path.
    """

    def __init__(
        self,
        host: str,
        *,
        timeout: float,
        implicit_tls: ssl.SSLContext | None,
        on_event: EventCallback | None = None,
    ) -> None:
        self._implicit_tls = implicit_tls
        self._on_event = on_event
        # No host here: smtplib would connect inside __init__ and then look up
        # our own FQDN; we connect explicitly and name ourselves after the socket.
        super().__init__(local_hostname="localhost", timeout=timeout)
        # smtplib.starttls() verifies against _host: the name, not the address.
        self._host = host

    def _get_socket(self, host: str, port: int, timeout: float | None) -> socket.socket:
        sock = _open_pinned_socket(
            host,
            port,
            _resolve_timeout(timeout),
            self._implicit_tls,
            self._on_event,
        )
        self.local_hostname = _ehlo_name(sock)
        return sock


def open_smtp(
    server: ServerSettings,
    timeout: float | None = None,
    *,
    on_event: EventCallback | None = None,
) -> smtplib.SMTP:
    """Connect (not log in) to an SMTP server, with TLS as ``server.security`` asks.

    For starttls the session has already said EHLO, STARTTLS; the caller's next
    command (login, or ``ehlo()``) says EHLO again over TLS as RFC 3207 requires.
    """
    _require_encryption_allowed(server)
    seconds = _resolve_timeout(timeout)
    context = netguard.mail_ssl_context()
    host = netguard.normalize_host(server.host)
    smtp = PinnedSMTP(
        host,
        timeout=seconds,
        implicit_tls=context if server.security == SECURITY_SSL else None,
        on_event=on_event,
    )
    try:
        code, message = smtp.connect(host, server.port)
        if code != 220:
            raise smtplib.SMTPConnectError(code, message)
        if server.security == SECURITY_STARTTLS:
            code, message = smtp.ehlo()
            if code != 250:
                raise smtplib.SMTPHeloError(code, message)
            if not smtp.has_extn("starttls"):
                raise StartTLSNotOffered("SMTP")
            smtp.starttls(context=context)
            _emit(on_event, "tls")
    except BaseException:
        smtp.close()
        raise
    _emit(on_event, "ready")
    return smtp
