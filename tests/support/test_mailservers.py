"""The test mail servers themselves behave like real ones."""

from __future__ import annotations

import smtplib
import ssl
import time
import uuid
from email.message import EmailMessage

import imapclient
import pytest

from tests.support.mailservers import DovecotServer, MailCA, SMTPTestServer


def _message(sender: str, to: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = f"Test {uuid.uuid4().hex}"
    message.set_content("Hello from the test suite.\n")
    return message


def _client_context(mail_ca: MailCA) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(mail_ca.path))


def test_a_message_delivered_into_the_maildir_is_visible_over_imap(
    dovecot: DovecotServer, mail_ca: MailCA, mail_user: tuple[str, str]
) -> None:
    # Given a user with one message in INBOX and one in another folder
    username, password = mail_user
    inbox_message = _message("sender@example.com", f"{username}@example.com")
    archived_message = _message("sender@example.com", f"{username}@example.com")
    dovecot.deliver(username, inbox_message.as_bytes())
    dovecot.deliver(username, archived_message.as_bytes(), folder="Archive")

    # When the user reads the mailbox over IMAPS
    with imapclient.IMAPClient(
        dovecot.host, dovecot.imaps_port, ssl_context=_client_context(mail_ca), timeout=5
    ) as client:
        client.login(username, password)
        folders = [name for _flags, _delim, name in client.list_folders()]
        client.select_folder("INBOX", readonly=True)
        inbox = client.fetch(client.search("ALL"), ["BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])
        client.select_folder("Archive", readonly=True)
        archive = client.fetch(client.search("ALL"), ["BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])

    # Then each message is where it was delivered
    assert "Archive" in folders
    inbox_headers = [data[b"BODY[HEADER.FIELDS (SUBJECT)]"] for data in inbox.values()]
    archive_headers = [data[b"BODY[HEADER.FIELDS (SUBJECT)]"] for data in archive.values()]
    assert len(inbox_headers) == 1
    assert inbox_message["Subject"].encode() in inbox_headers[0]
    assert len(archive_headers) == 1
    assert archived_message["Subject"].encode() in archive_headers[0]


def test_a_user_added_at_run_time_can_log_in_and_a_wrong_password_cannot(
    dovecot: DovecotServer, mail_ca: MailCA
) -> None:
    # Given a user added while Dovecot is running
    username = f"late{uuid.uuid4().hex[:8]}"
    dovecot.add_user(username, "first-password")

    # When they log in over plain IMAP with STARTTLS
    with imapclient.IMAPClient(dovecot.host, dovecot.imap_port, ssl=False, timeout=5) as client:
        client.starttls(_client_context(mail_ca))
        with pytest.raises(imapclient.exceptions.LoginError):
            client.login(username, "wrong-password")
        # Then the right password works
        assert client.login(username, "first-password")


def test_smtp_server_receives_a_message_sent_after_starttls_and_auth(
    smtp_server: SMTPTestServer, mail_ca: MailCA, mail_user: tuple[str, str]
) -> None:
    # Given a user of the SMTP server
    username, password = mail_user
    message = _message(f"{username}@example.com", "someone@example.org")

    # When a message is sent after STARTTLS and AUTH
    with smtplib.SMTP(
        smtp_server.host, smtp_server.port, local_hostname="localhost", timeout=5
    ) as smtp:
        smtp.starttls(context=_client_context(mail_ca))
        smtp.login(username, password)
        smtp.send_message(message)

    # Then the server stored it with its envelope, login and TLS state
    received = [m for m in smtp_server.messages if message["Subject"].encode() in m.data]
    assert len(received) == 1
    assert received[0].mail_from == f"{username}@example.com"
    assert received[0].rcpt_tos == ("someone@example.org",)
    assert received[0].login == username
    assert received[0].tls is True


def test_smtp_server_refuses_a_wrong_password(
    smtp_server: SMTPTestServer, mail_ca: MailCA, mail_user: tuple[str, str]
) -> None:
    username, _password = mail_user
    with smtplib.SMTP(
        smtp_server.host, smtp_server.port, local_hostname="localhost", timeout=5
    ) as smtp:
        smtp.starttls(context=_client_context(mail_ca))
        with pytest.raises(smtplib.SMTPAuthenticationError) as caught:
            smtp.login(username, "not-the-password")
    assert caught.value.smtp_code == 535


def test_fail_next_makes_one_transaction_fail_with_451_then_the_next_succeeds(
    smtp_server: SMTPTestServer, mail_ca: MailCA, mail_user: tuple[str, str]
) -> None:
    # Given the server will answer the next transaction with a temporary failure
    username, password = mail_user
    smtp_server.fail_next(451, "4.3.0 Try again later", count=1)
    first = _message(f"{username}@example.com", "someone@example.org")
    second = _message(f"{username}@example.com", "someone@example.org")

    with smtplib.SMTP_SSL(
        smtp_server.host,
        smtp_server.smtps_port,
        local_hostname="localhost",
        context=_client_context(mail_ca),
        timeout=5,
    ) as smtp:
        smtp.login(username, password)
        # When a message is sent, it is refused with 451
        with pytest.raises(smtplib.SMTPDataError) as caught:
            smtp.send_message(first)
        # And the next one is accepted
        smtp.send_message(second)

    assert caught.value.smtp_code == 451
    assert b"4.3.0 Try again later" in caught.value.smtp_error
    subjects = [m.data for m in smtp_server.messages]
    assert not any(first["Subject"].encode() in data for data in subjects)
    assert sum(second["Subject"].encode() in data for data in subjects) == 1
    assert any(first["Subject"].encode() in m.data for m in smtp_server.rejected)


def test_failed_logins_do_not_slow_down_later_logins(
    dovecot: DovecotServer, mail_ca: MailCA, mail_user: tuple[str, str]
) -> None:
    # Dovecot's default per-IP penalty would add 2 s, then 4 s, to these attempts.
    username, password = mail_user
    started = time.monotonic()
    for attempt in ("wrong-1", "wrong-2", password):
        with imapclient.IMAPClient(
            dovecot.host, dovecot.imaps_port, ssl_context=_client_context(mail_ca), timeout=5
        ) as client:
            if attempt == password:
                client.login(username, attempt)
            else:
                with pytest.raises(imapclient.exceptions.LoginError):
                    client.login(username, attempt)
    assert time.monotonic() - started < 4
