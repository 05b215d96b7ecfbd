"""A password changed on the mail server, end to end: a real worker syncs against
Dovecot, the owner hears once in the app and once by email (through the operator's
EMAIL_URL, here aiosmtpd), however many syncs fail, and reconnecting resolves it."""

from __future__ import annotations

import email
from email import policy

import pytest

from inboxes.models import Mailbox
from inboxes.services import mailbox_update
from notifications.models import Kind, Notification
from tests.support.mail import connect_imap_mailbox

pytest.register_assert_rewrite("tests.support.workers")
from tests.support.workers import wait_until  # noqa: E402

pytest_plugins = ["tests.support.workers"]


def emails_to(smtp_server, address: str) -> list:
    return [m for m in smtp_server.messages if address in m.rcpt_tos]


@pytest.mark.django_db(transaction=True)
def test_a_changed_password_notifies_the_owner_once_and_reconnecting_resolves_it(
    engine, member, dovecot, smtp_server, mail_user
):
    from inboxes.tasks import sync_mailbox

    worker = engine.worker(
        env={
            "EMAIL_URL": f"smtp://{smtp_server.host}:{smtp_server.port}",
            "DEFAULT_FROM_EMAIL": "postkamer@ops.example.com",
        }
    )
    mailbox = connect_imap_mailbox(
        actor=member,
        dovecot=dovecot,
        smtp_server=smtp_server,
        user=mail_user,
        address="bo.sales@acme.example.com",
        kind="personal",
    )
    sync_mailbox.delay(str(mailbox.pk))
    wait_until(
        lambda: Mailbox.objects.filter(pk=mailbox.pk, sync_state="idle").exists(), 20, "a sync"
    )
    assert not Notification.objects.exists()

    # The owner changes the password on the server; the next sync fails.
    username, password = mail_user
    dovecot.add_user(username, "changed-by-the-owner")
    sync_mailbox.delay(str(mailbox.pk))
    wait_until(
        lambda: Notification.objects.filter(user=member).exists(), 20, "the owner's notification"
    )
    wait_until(lambda: emails_to(smtp_server, member.email), 20, "the owner's email")
    for _ in range(3):  # more polls and manual syncs of the broken mailbox
        sync_mailbox.delay(str(mailbox.pk))
    wait_until(lambda: worker.tasks_succeeded("inboxes.tasks.sync_mailbox") >= 5, 20, "the syncs")

    [notice] = Notification.objects.filter(user=member)
    assert notice.kind == Kind.MAILBOX_NEEDS_ATTENTION
    assert "bo.sales@acme.example.com" in notice.text and "the password was refused" in notice.text
    [sent] = emails_to(smtp_server, member.email)
    parsed = email.message_from_bytes(sent.data, policy=policy.default)
    assert parsed["Auto-Submitted"] == "auto-generated"
    assert "bo.sales@acme.example.com" in parsed["Subject"]
    assert f"/settings/mailboxes/{mailbox.pk}/" in parsed.get_content()
    assert sent.mail_from == "postkamer@ops.example.com"

    # Reconnect with the new password: the notice says it works again.
    mailbox_update(actor=member, mailbox=mailbox, imap={"password": "changed-by-the-owner"})
    notice.refresh_from_db()
    assert notice.resolved_at is not None and "works again" in notice.text
    wait_until(
        lambda: Mailbox.objects.filter(
            pk=mailbox.pk, status="connected", sync_state="idle"
        ).exists(),
        20,
        "the sync after reconnecting",
    )
    assert Notification.objects.filter(user=member).count() == 1
    assert len(emails_to(smtp_server, member.email)) == 1
