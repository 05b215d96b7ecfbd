"""Pinned IMAP and SMTP connections against the real test servers."""

from __future__ import annotations

import logging
import socket
import ssl
import uuid
from email.message import EmailMessage

import pytest
from pytest_django import Settings

from inboxes.providers.imap import connection as mailconn
from inboxes.providers.imap.connection import (
    ServerSettings,
    StartTLSNotOffered,
    UnencryptedNotAllowed,
)
from tests.support.mailservers import (
    DovecotServer,
    FakeDNS,
    SMTPTestServer,
    imap_without_starttls,
    smtp_without_starttls,
)


def test_server_settings_never_show_the_password() -> None:
    server = ServerSettings("mail.example.com", 993, "ssl", "ann", "hunter2-secret")
    assert "hunter2-secret" not in repr(server)
    assert "hunter2-secret" not in str(server)
    assert "ann" in repr(server)


def test_server_settings_refuse_an_unknown_security_mode() -> None:
    with pytest.raises(ValueError):
        ServerSettings("mail.example.com", 993, "tls-please", "ann", "pw")


@pytest.mark.parametrize("security", ["ssl", "starttls"])
def test_open_imap_connects_with_verified_tls_and_leaves_login_to_the_caller(
    dovecot: DovecotServer, mail_user: tuple[str, str], security: str
) -> None:
    # Given a Dovecot user
    username, password = mail_user
    events: list[str] = []

    # When we open an IMAP connection
    client = mailconn.open_imap(
        dovecot.imap_settings(username, password, security), timeout=5, on_event=events.append
    )
    try:
        # Then it is encrypted, not yet logged in, and login works
        assert isinstance(client._imap.sock, ssl.SSLSocket)
        assert client._imap.state == "NONAUTH"
        assert client.login(username, password)
    finally:
        client.logout()
    assert events == ["resolved", "connected", "tls", "ready"]


def _fetch_one(client, username: str, password: str) -> bytes:
    client.login(username, password)
    client.select_folder("INBOX", readonly=True)
    (uid,) = client.search(["ALL"])
    return client.fetch([uid], ["BODY.PEEK[]"])[uid][b"BODY[]"]


def test_imap_traffic_is_formatted_for_the_log_only_when_its_logger_keeps_it(
    dovecot: DovecotServer, mail_user: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    # Given a message whose body has a marker (imaplib, at IMAPClient's debug
    # level, formats every response, each fetched body included, for the log)
    username, password = mail_user
    marker = f"marker-{uuid.uuid4().hex}"
    message = EmailMessage()
    message["Subject"] = "hello"
    message.set_content(f"body with {marker}")
    dovecot.deliver(username, message.as_bytes())
    settings = dovecot.imap_settings(username, password)

    # When the imapclient.imaplib logger is above DEBUG (the default), a fetch
    # formats nothing
    formatted: list[str] = []
    caplog.set_level(logging.INFO, logger="imapclient.imaplib")
    client = mailconn.open_imap(settings, timeout=5)
    client._imap._mesg = formatted.append
    try:
        assert marker.encode() in _fetch_one(client, username, password)
    finally:
        client.logout()
    assert formatted == []

    # When it is at DEBUG, the traffic, the body included, is in the log
    caplog.set_level(logging.DEBUG, logger="imapclient.imaplib")
    client = mailconn.open_imap(settings, timeout=5)
    try:
        assert marker.encode() in _fetch_one(client, username, password)
    finally:
        client.logout()
    assert any(
        marker in record.getMessage()
        for record in caplog.records
        if record.name == "imapclient.imaplib"
    )


def test_open_imap_without_tls_is_refused_unless_private_hosts_are_allowed(
    dovecot: DovecotServer, mail_user: tuple[str, str], settings: Settings
) -> None:
    username, password = mail_user
    plain = dovecot.imap_settings(username, password, "none")

    client = mailconn.open_imap(plain, timeout=5)
    assert not isinstance(client._imap.sock, ssl.SSLSocket)
    client.logout()

    settings.ALLOW_PRIVATE_MAIL_HOSTS = False
    with pytest.raises(UnencryptedNotAllowed) as caught:
        mailconn.open_imap(plain, timeout=5)
    assert str(caught.value) == "Unencrypted connections are not allowed"


@pytest.mark.parametrize("security", ["ssl", "starttls"])
def test_open_imap_checks_the_certificate_against_the_name_not_the_ip(
    dovecot: DovecotServer, fake_dns: FakeDNS, security: str
) -> None:
    # Given a name that resolves to the server, whose certificate names only
    # 127.0.0.1 and localhost (verifying against the IP would wrongly pass)
    fake_dns.add("wrong-name.test", "127.0.0.1")
    server = dovecot.imap_settings("nobody", "pw", security)
    server = ServerSettings("wrong-name.test", server.port, security, "nobody", "pw")

    # When we connect, Then the certificate is refused for that name
    with pytest.raises(ssl.SSLCertVerificationError) as caught:
        mailconn.open_imap(server, timeout=5)
    assert "wrong-name.test" in caught.value.verify_message


def test_open_imap_resolves_the_name_once_and_verifies_tls_for_it(
    dovecot: DovecotServer, mail_user: tuple[str, str], fake_dns: FakeDNS
) -> None:
    username, password = mail_user
    server = ServerSettings("localhost", dovecot.imap_port, "starttls", username, password)
    client = mailconn.open_imap(server, timeout=5)
    try:
        assert client._imap.sock.server_hostname == "localhost"
        assert client._imap.sock.getpeername()[0] == "127.0.0.1"
    finally:
        client.logout()
    assert fake_dns.calls.count("localhost") == 1


def test_open_imap_refuses_a_certificate_from_an_untrusted_ca(
    dovecot: DovecotServer, settings: Settings
) -> None:
    settings.MAIL_TLS_CA_FILE = ""
    with pytest.raises(ssl.SSLCertVerificationError):
        mailconn.open_imap(dovecot.imap_settings("nobody", "pw", "ssl"), timeout=5)


def test_open_imap_refuses_to_continue_when_starttls_is_not_offered() -> None:
    with imap_without_starttls() as fake:
        server = ServerSettings(fake.host, fake.port, "starttls", "ann", "pw")
        with pytest.raises(StartTLSNotOffered):
            mailconn.open_imap(server, timeout=5)


def test_open_imap_gives_up_after_the_timeout_when_the_server_stays_silent() -> None:
    # A listener that accepts but never greets.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    try:
        server = ServerSettings("127.0.0.1", listener.getsockname()[1], "ssl", "ann", "pw")
        with pytest.raises(TimeoutError):
            mailconn.open_imap(server, timeout=0.3)
    finally:
        listener.close()


def test_open_imap_refuses_loopback_before_connecting_in_production(
    dovecot: DovecotServer, settings: Settings
) -> None:
    settings.ALLOW_PRIVATE_MAIL_HOSTS = False
    with pytest.raises(mailconn.netguard.HostNotAllowed):
        mailconn.open_imap(dovecot.imap_settings("nobody", "pw", "ssl"), timeout=5)


@pytest.mark.parametrize("security", ["starttls", "ssl"])
def test_open_smtp_connects_with_verified_tls_and_the_caller_can_log_in_and_send(
    smtp_server: SMTPTestServer, mail_user: tuple[str, str], security: str
) -> None:
    # Given an SMTP user
    username, password = mail_user
    message = EmailMessage()
    message["From"] = f"{username}@example.com"
    message["To"] = "someone@example.org"
    message["Subject"] = f"Pinned {uuid.uuid4().hex}"
    message.set_content("Hi.\n")
    events: list[str] = []

    # When we open an SMTP connection, log in and send
    smtp = mailconn.open_smtp(
        smtp_server.smtp_settings(username, password, security),
        timeout=5,
        on_event=events.append,
    )
    try:
        assert isinstance(smtp.sock, ssl.SSLSocket)
        assert smtp.local_hostname == "[127.0.0.1]"
        smtp.login(username, password)
        smtp.send_message(message)
    finally:
        smtp.quit()

    # Then the server got it over TLS from the logged-in user
    received = [m for m in smtp_server.messages if message["Subject"].encode() in m.data]
    assert [(m.login, m.tls) for m in received] == [(username, True)]
    assert events == ["resolved", "connected", "tls", "ready"]


def test_open_smtp_checks_the_certificate_against_the_name_not_the_ip(
    smtp_server: SMTPTestServer, fake_dns: FakeDNS
) -> None:
    fake_dns.add("wrong-name.test", "127.0.0.1")
    server = ServerSettings("wrong-name.test", smtp_server.port, "starttls", "a", "b")
    with pytest.raises(ssl.SSLCertVerificationError):
        mailconn.open_smtp(server, timeout=5)


def test_open_smtp_refuses_to_continue_when_starttls_is_not_offered() -> None:
    with smtp_without_starttls() as fake:
        server = ServerSettings(fake.host, fake.port, "starttls", "ann", "pw")
        with pytest.raises(StartTLSNotOffered):
            mailconn.open_smtp(server, timeout=5)


def test_open_smtp_without_tls_is_refused_unless_private_hosts_are_allowed(
    smtp_server: SMTPTestServer, settings: Settings
) -> None:
    settings.ALLOW_PRIVATE_MAIL_HOSTS = False
    with pytest.raises(UnencryptedNotAllowed):
        mailconn.open_smtp(smtp_server.smtp_settings("a", "b", "none"), timeout=5)
