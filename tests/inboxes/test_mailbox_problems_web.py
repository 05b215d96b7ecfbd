"""A mailbox's problem, said once in plain words, where people work: the wording
(inboxes/error_wording.py), the one badge, the banner in the inbox and its composer, a
queued reply that waits, and correcting the servers in place on the mailbox page."""

from __future__ import annotations

import html
import re

import pytest

from audit.models import AuditEvent
from conversations.handling import conversation_reply
from inboxes.error_wording import mailbox_state, plain_error
from inboxes.models import Mailbox, OutboxItem
from inboxes.providers.base import ProviderError
from inboxes.sync.run import mailbox_sync
from tests.support.conversations_factory import make_conversation

pytestmark = pytest.mark.django_db

PASSWORD_REFUSED = "The password was refused."


@pytest.mark.parametrize(
    ("stored", "says"),
    [
        (
            "dns: Could not find the mail server imap.exmple.com.",
            "We couldn't find the server imap.exmple.com. Check the server name for typos.",
        ),
        (
            "Could not find the mail server imap.exmple.com.",
            "couldn't find the server imap.exmple.com",
        ),
        (
            "auth: Login failed: [AUTHENTICATIONFAILED] Authentication failed.",
            "The password was refused. Enter the mailbox's current password",
        ),
        ("IMAP login failed: [AUTHENTICATIONFAILED] Authentication failed.", PASSWORD_REFUSED),
        ("smtp: auth: 535 5.7.8 Error: authentication failed", "The SMTP password was refused."),
        (
            "tls: TLS handshake failed: certificate verify failed (Hostname mismatch)",
            "security certificate could not be verified",
        ),
        (
            "tls: TLS handshake failed: wrong version number (the port may expect STARTTLS or no TLS)",
            "the port and the security setting don't match",
        ),
        (
            "tcp: Could not connect to imap.acme.example port 993: timed out",
            "The server imap.acme.example did not answer in time.",
        ),
        (
            "tcp: Could not connect to imap.acme.example port 994: connection refused",
            "The server imap.acme.example refused the connection on port 994.",
        ),
        ("This mail server address can't be used.", "This server address can't be used."),
        ("invalid_grant: Token has been expired or revoked.", "The sign-in has expired"),
    ],
)
def test_a_stored_error_is_said_in_plain_words_with_the_fix(stored, says):
    assert says in plain_error(stored).sentence


def _broken(mailbox: Mailbox, **fields) -> Mailbox:
    Mailbox.objects.filter(pk=mailbox.pk).update(**fields)
    mailbox.refresh_from_db()
    return mailbox


def test_a_mailbox_row_shows_one_badge_and_its_error_once_in_each_state(client, admin, support):
    _, mailbox = support
    client.force_login(admin)
    login_failed = "IMAP login failed: [AUTHENTICATIONFAILED] Authentication failed."
    states = [
        (
            {"status": "connected", "sync_state": "idle", "last_error": "", "sync_last_error": ""},
            "Connected",
            "",
        ),
        (
            {
                "status": "connected",
                "sync_state": "error",
                "sync_last_error": "IMAP connection problem: timed out",
            },
            "Retrying",
            "We keep trying.",
        ),
        (
            {
                "status": "error",
                "sync_state": "stopped",
                "last_error": login_failed,
                "sync_last_error": login_failed,
            },
            "Not working",
            "The password was refused.",
        ),
        (
            {"status": "needs_reauth", "last_error": "revoked", "sync_last_error": "revoked"},
            "Reconnect needed",
            "The sign-in has expired or was withdrawn.",
        ),
    ]
    for fields, label, message in states:
        _broken(mailbox, **fields)
        row = client.get(f"/settings/mailboxes/{mailbox.pk}/row/").text
        badges = re.findall(r'<span class="badge [^"]*">([^<]*)</span>', row)
        assert badges == [label], (fields, badges)
        assert "Connected" not in row or label == "Connected"
        if message:
            assert row.count(message) == 1, row
            assert "AUTHENTICATIONFAILED" not in row and "IMAP connection problem" not in row
        else:
            assert "mailbox-problem" not in row
        assert mailbox_state(mailbox).label == label


def _refuse_the_password(dovecot, mail_user, mailbox: Mailbox) -> Mailbox:
    dovecot.add_user(mail_user[0], "changed-by-the-owner")
    with pytest.raises(ProviderError):
        mailbox_sync(mailbox.pk)
    mailbox.refresh_from_db()
    assert mailbox.status == "error"
    return mailbox


def test_a_refused_password_shows_a_banner_in_the_inbox_and_the_composer(
    client, admin, member, support, dovecot, mail_user
):
    inbox, mailbox = support
    conversation = make_conversation(inbox)
    _refuse_the_password(dovecot, mail_user, mailbox)
    banner = "Replies from support@acme.example.com can't be sent: the password was refused."

    # A member sees it in the inbox and over the reply box, and is told to ask an admin
    client.force_login(member)
    page = html.unescape(client.get("/inbox/").text)
    assert f"{banner} Ask an admin to reconnect." in page
    opened = html.unescape(client.get(f"/inbox/c/{conversation.pk}/").text)
    composer = opened[opened.index('id="composer"') :]
    assert f"{banner} Ask an admin to reconnect." in composer
    assert "mail-reconnect" not in page and "mail-reconnect" not in opened

    # An admin gets the fix and the Reconnect link to the mailbox's server settings
    client.force_login(admin)
    opened = html.unescape(client.get(f"/inbox/c/{conversation.pk}/").text)
    link = f'href="/settings/mailboxes/{mailbox.pk}/#server-settings" class="mail-reconnect">Reconnect</a>'
    assert banner in opened and link in opened
    assert "Ask an admin" not in opened


def test_a_queued_reply_behind_a_broken_connection_says_it_waits(
    client, admin, support, dovecot, mail_user
):
    inbox, mailbox = support
    conversation = make_conversation(inbox)
    reply = conversation_reply(actor=admin, conversation=conversation, text="On it.")
    OutboxItem.objects.filter(message=reply).update(
        detail="Attempt 4 failed, retrying: SMTP connection problem: timed out"
    )
    client.force_login(admin)
    assert "Attempt 4 failed" in client.get(f"/inbox/c/{conversation.pk}/").text

    _refuse_the_password(dovecot, mail_user, mailbox)
    thread = client.get(f"/inbox/c/{conversation.pk}/").text
    assert "Waiting: support@acme.example.com can&#x27;t send until it is reconnected." in thread
    assert "Attempt 4 failed" not in thread


def servers_form(mailbox: Mailbox, **changes) -> dict:
    form = {
        f"{p}_{field}": getattr(mailbox, f"{p}_{field}")
        for p in ("imap", "smtp")
        for field in ("host", "port", "security", "username")
    }
    return {**form, **changes}


def test_an_admin_corrects_the_server_in_place_only_a_working_one_is_saved(
    client, admin, support, dovecot, fake_dns
):
    _, mailbox = support
    good_host = mailbox.imap_host
    # The provider renamed its server: the mailbox is broken
    mailbox = _broken(
        mailbox,
        imap_host="old-imap.acme.test",
        status="error",
        last_error="dns: Could not find the mail server old-imap.acme.test.",
    )
    client.force_login(admin)
    page = client.get(f"/settings/mailboxes/{mailbox.pk}/").text
    assert 'id="server-settings"' in page and 'value="old-imap.acme.test"' in page
    url = f"/settings/mailboxes/{mailbox.pk}/servers/"

    # A wrong name: nothing changes, the form keeps it, the error is plain
    wrong = client.post(url, servers_form(mailbox, imap_host="imap.acme.tset"))
    assert wrong.status_code == 422
    assert "Nothing was changed." in wrong.text
    assert (
        "We couldn&#x27;t find the server imap.acme.tset. Check the server name for typos."
        in wrong.text
    )
    assert 'value="imap.acme.tset"' in wrong.text
    mailbox.refresh_from_db()
    assert (mailbox.imap_host, mailbox.status) == ("old-imap.acme.test", "error")
    assert not AuditEvent.objects.filter(action="mailbox.updated").exists()

    # The right one: tested, saved, connected again, audited; the password is kept
    done = client.post(url, servers_form(mailbox, imap_host=good_host), follow=True)
    assert "the connection test passed; the settings are saved" in done.text
    mailbox.refresh_from_db()
    assert (mailbox.imap_host, mailbox.status, mailbox.last_error) == (good_host, "connected", "")
    event = AuditEvent.objects.get(action="mailbox.updated")
    assert event.data["changed"] == ["imap.host"]


def test_a_member_cannot_change_a_team_emails_servers(client, member, support):
    _, mailbox = support
    client.force_login(member)
    page = client.get(f"/settings/mailboxes/{mailbox.pk}/").text
    assert 'id="server-settings"' not in page
    response = client.post(
        f"/settings/mailboxes/{mailbox.pk}/servers/", servers_form(mailbox, imap_host="evil.test")
    )
    assert response.status_code == 404  # a member does not see a team email's page
    mailbox.refresh_from_db()
    assert mailbox.imap_host != "evil.test"


def test_the_test_button_says_the_same_plain_words_as_the_row(
    client, admin, support, dovecot, mail_user
):
    _, mailbox = support
    dovecot.add_user(mail_user[0], "changed-by-the-owner")
    client.force_login(admin)

    page = html.unescape(
        client.post(
            f"/settings/mailboxes/{mailbox.pk}/test/", {"next": "/settings/inboxes/"}, follow=True
        ).text
    )

    said = "The password was refused. Enter the mailbox's current password"
    assert f"support@acme.example.com: the connection test failed. {said}" in page
    row = page[page.index(f'id="mailbox-{mailbox.pk}"') :]
    row = row[: row.index("</tr>")]
    assert '<span class="badge error">Not working</span>' in row and said in row
    assert "AUTHENTICATIONFAILED" not in page
    mailbox.refresh_from_db()
    assert mailbox.status == "error" and mailbox.last_error.startswith("auth: Login failed")
