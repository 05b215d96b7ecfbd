"""The mailbox connection test, step by step, against real servers."""

from __future__ import annotations

import json
import socket
import uuid

import pytest
from pytest_django import Settings

from inboxes.connection_test import ConnectionTestResult, run_connection_test
from inboxes.netguard import GENERIC_REFUSAL
from inboxes.providers.imap.connection import ServerSettings
from tests.support.mailservers import (
    DovecotServer,
    FakeDNS,
    ScriptedServer,
    SMTPTestServer,
    free_port,
    imap_without_starttls,
    smtp_without_starttls,
)

ALL_STEPS = ["dns", "tcp", "tls", "auth", "imap_select", "smtp"]


def _steps(result: ConnectionTestResult) -> list[tuple[str, bool]]:
    return [(step.step, step.ok) for step in result.steps]


def _details(result: ConnectionTestResult) -> str:
    return json.dumps(result.as_dict())


def _failed_detail(result: ConnectionTestResult) -> str:
    return next(step.detail for step in result.steps if not step.ok)


def _with_host(server: ServerSettings, host: str, port: int | None = None) -> ServerSettings:
    return ServerSettings(
        host, port or server.port, server.security, server.username, server.password
    )


@pytest.mark.parametrize(
    ("imap_security", "smtp_security"),
    [("ssl", "starttls"), ("starttls", "starttls"), ("ssl", "ssl")],
)
def test_every_step_passes_for_a_working_mailbox(
    dovecot: DovecotServer,
    smtp_server: SMTPTestServer,
    mail_user: tuple[str, str],
    imap_security: str,
    smtp_security: str,
) -> None:
    # Given a user with one message in INBOX
    username, password = mail_user
    dovecot.deliver(username, b"From: a@example.com\nSubject: hi\n\nHello\n")

    # When the connection test runs
    result = run_connection_test(
        imap=dovecot.imap_settings(username, password, imap_security),
        smtp=smtp_server.smtp_settings(username, password, smtp_security),
        timeout=5,
    )

    # Then every step passed, in order, with readable details
    assert _steps(result) == [(step, True) for step in ALL_STEPS]
    assert result.ok is True
    assert result.failed_step is None
    details = {step.step: step.detail for step in result.steps}
    assert details["imap_select"] == "INBOX: 1 message"
    assert "TLS" in details["tls"]
    assert "TLS" in details["smtp"]
    assert password not in _details(result)
    assert result.as_dict()["steps"][0] == {
        "step": "dns",
        "server": "imap",
        "ok": True,
        "detail": "Found 127.0.0.1.",
    }


def test_without_tls_the_tls_step_is_left_out(
    dovecot: DovecotServer, smtp_server: SMTPTestServer, mail_user: tuple[str, str]
) -> None:
    username, password = mail_user
    result = run_connection_test(
        imap=dovecot.imap_settings(username, password, "none"),
        smtp=smtp_server.smtp_settings(username, password, "none"),
        timeout=5,
    )
    assert _steps(result) == [
        ("dns", True),
        ("tcp", True),
        ("auth", True),
        ("imap_select", True),
        ("smtp", True),
    ]
    assert result.steps[3].detail == "INBOX: 0 messages"


def test_a_wrong_imap_password_fails_at_auth_with_dovecots_words_and_stops(
    dovecot: DovecotServer, smtp_server: SMTPTestServer, mail_user: tuple[str, str]
) -> None:
    username, password = mail_user
    wrong = "Wrong-" + password
    result = run_connection_test(
        imap=dovecot.imap_settings(username, wrong, "ssl"),
        smtp=smtp_server.smtp_settings(username, password),
        timeout=5,
    )
    assert result.failed_step == "auth"
    assert _steps(result) == [("dns", True), ("tcp", True), ("tls", True), ("auth", False)]
    assert "[AUTHENTICATIONFAILED] Authentication failed." in _failed_detail(result)
    assert wrong not in _details(result)
    assert password not in _details(result)


def test_a_wrong_smtp_password_fails_at_smtp_naming_the_auth_part(
    dovecot: DovecotServer, smtp_server: SMTPTestServer, mail_user: tuple[str, str]
) -> None:
    username, password = mail_user
    wrong = "Wrong-" + password
    result = run_connection_test(
        imap=dovecot.imap_settings(username, password),
        smtp=smtp_server.smtp_settings(username, wrong),
        timeout=5,
    )
    assert result.failed_step == "smtp"
    assert _steps(result)[-1] == ("smtp", False)
    assert _failed_detail(result) == "auth: 535 5.7.8 Authentication credentials invalid"
    assert wrong not in _details(result)


def test_a_closed_port_fails_at_tcp(
    dovecot: DovecotServer, smtp_server: SMTPTestServer, mail_user: tuple[str, str]
) -> None:
    username, password = mail_user
    closed = free_port()
    result = run_connection_test(
        imap=_with_host(dovecot.imap_settings(username, password), "127.0.0.1", closed),
        smtp=smtp_server.smtp_settings(username, password),
        timeout=5,
    )
    assert _steps(result) == [("dns", True), ("tcp", False)]
    assert _failed_detail(result) == (
        f"Could not connect to 127.0.0.1 port {closed}: connection refused"
    )


def test_a_closed_smtp_port_fails_at_smtp_naming_the_tcp_part(
    dovecot: DovecotServer, mail_user: tuple[str, str]
) -> None:
    username, password = mail_user
    closed = free_port()
    result = run_connection_test(
        imap=dovecot.imap_settings(username, password),
        smtp=ServerSettings("127.0.0.1", closed, "starttls", username, password),
        timeout=5,
    )
    assert result.failed_step == "smtp"
    assert _failed_detail(result) == (
        f"tcp: could not connect to 127.0.0.1 port {closed}: connection refused"
    )


@pytest.mark.parametrize("security", ["ssl", "starttls"])
def test_a_certificate_for_another_name_fails_at_tls(
    dovecot: DovecotServer,
    smtp_server: SMTPTestServer,
    mail_user: tuple[str, str],
    fake_dns: FakeDNS,
    security: str,
) -> None:
    # Given a name that resolves to Dovecot, whose certificate doesn't name it
    username, password = mail_user
    fake_dns.add("wrong-name.test", "127.0.0.1")
    result = run_connection_test(
        imap=_with_host(dovecot.imap_settings(username, password, security), "wrong-name.test"),
        smtp=smtp_server.smtp_settings(username, password),
        timeout=5,
    )
    assert _steps(result) == [("dns", True), ("tcp", True), ("tls", False)]
    detail = _failed_detail(result)
    assert detail.startswith("TLS handshake failed: certificate verify failed")
    assert "wrong-name.test" in detail


def test_a_certificate_from_an_untrusted_ca_fails_at_tls(
    dovecot: DovecotServer,
    smtp_server: SMTPTestServer,
    mail_user: tuple[str, str],
    settings: Settings,
) -> None:
    username, password = mail_user
    settings.MAIL_TLS_CA_FILE = ""
    result = run_connection_test(
        imap=dovecot.imap_settings(username, password),
        smtp=smtp_server.smtp_settings(username, password),
        timeout=5,
    )
    assert result.failed_step == "tls"
    assert _failed_detail(result).startswith("TLS handshake failed: certificate verify failed")


def test_an_untrusted_smtp_certificate_fails_at_smtp_naming_the_tls_part(
    dovecot: DovecotServer,
    smtp_server: SMTPTestServer,
    mail_user: tuple[str, str],
    fake_dns: FakeDNS,
) -> None:
    username, password = mail_user
    fake_dns.add("wrong-name.test", "127.0.0.1")
    result = run_connection_test(
        imap=dovecot.imap_settings(username, password),
        smtp=_with_host(smtp_server.smtp_settings(username, password), "wrong-name.test"),
        timeout=5,
    )
    assert result.failed_step == "smtp"
    assert _failed_detail(result).startswith("tls: handshake failed: certificate verify failed")


def test_an_unresolvable_name_fails_at_dns(
    dovecot: DovecotServer,
    smtp_server: SMTPTestServer,
    mail_user: tuple[str, str],
    fake_dns: FakeDNS,
) -> None:
    username, password = mail_user
    result = run_connection_test(
        imap=_with_host(dovecot.imap_settings(username, password), "no-such-host.invalid"),
        smtp=smtp_server.smtp_settings(username, password),
        timeout=5,
    )
    assert _steps(result) == [("dns", False)]
    assert _failed_detail(result) == "Could not find the mail server no-such-host.invalid."


def test_loopback_in_production_fails_at_dns_with_the_generic_message_and_no_connection(
    settings: Settings,
) -> None:
    # Given production settings (any port, so only the address check can refuse)
    # and a listener on loopback that would see any connection attempt
    settings.ALLOW_PRIVATE_MAIL_HOSTS = False
    settings.MAIL_ALLOWED_PORTS = []
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.setblocking(False)
    port = listener.getsockname()[1]
    try:
        # When a user asks us to test that address
        result = run_connection_test(
            imap=ServerSettings("127.0.0.1", port, "ssl", "ann", "pw-123456"),
            smtp=ServerSettings("127.0.0.1", port, "starttls", "ann", "pw-123456"),
            timeout=2,
        )
        # Then it fails at dns with the generic message and nothing connected
        assert _steps(result) == [("dns", False)]
        assert _failed_detail(result) == GENERIC_REFUSAL
        with pytest.raises(BlockingIOError):
            listener.accept()
    finally:
        listener.close()


def test_starttls_against_an_imap_server_without_it_fails_at_tls(
    smtp_server: SMTPTestServer, mail_user: tuple[str, str]
) -> None:
    username, password = mail_user
    with imap_without_starttls() as fake:
        result = run_connection_test(
            imap=ServerSettings(fake.host, fake.port, "starttls", username, password),
            smtp=smtp_server.smtp_settings(username, password),
            timeout=5,
        )
    assert _steps(result) == [("dns", True), ("tcp", True), ("tls", False)]
    assert _failed_detail(result) == "The IMAP server does not offer STARTTLS."


def test_starttls_against_an_smtp_server_without_it_fails_at_smtp(
    dovecot: DovecotServer, mail_user: tuple[str, str]
) -> None:
    username, password = mail_user
    with smtp_without_starttls() as fake:
        result = run_connection_test(
            imap=dovecot.imap_settings(username, password),
            smtp=ServerSettings(fake.host, fake.port, "starttls", username, password),
            timeout=5,
        )
    assert result.failed_step == "smtp"
    assert _failed_detail(result) == "tls: the SMTP server does not offer STARTTLS."


def test_a_server_that_is_not_imap_fails_clearly(
    smtp_server: SMTPTestServer, mail_user: tuple[str, str]
) -> None:
    # Given the IMAP settings point at the SMTP port by mistake
    username, password = mail_user
    result = run_connection_test(
        imap=ServerSettings(smtp_server.host, smtp_server.port, "starttls", username, password),
        smtp=smtp_server.smtp_settings(username, password),
        timeout=5,
    )
    assert result.failed_step == "tls"
    assert "did not answer like an IMAP server" in _failed_detail(result)


def test_a_silent_server_times_out_as_a_failed_step_instead_of_hanging() -> None:
    with ScriptedServer(greeting=None) as silent:
        result = run_connection_test(
            imap=ServerSettings(silent.host, silent.port, "ssl", "ann", "pw"),
            smtp=ServerSettings(silent.host, silent.port, "starttls", "ann", "pw"),
            timeout=0.3,
        )
    assert _steps(result) == [("dns", True), ("tcp", True), ("tls", False)]
    assert _failed_detail(result).endswith("timed out")


def test_the_password_never_appears_in_a_detail_even_when_it_equals_the_user_name(
    dovecot: DovecotServer, smtp_server: SMTPTestServer
) -> None:
    # Given an account whose password is its user name (so "Logged in as ..." would leak it)
    same = f"same{uuid.uuid4().hex}"
    dovecot.add_user(same, same)
    smtp_server.add_user(same, same)

    result = run_connection_test(
        imap=dovecot.imap_settings(same, same),
        smtp=smtp_server.smtp_settings(same, same),
        timeout=5,
    )

    assert result.ok is True
    assert same not in _details(result)
