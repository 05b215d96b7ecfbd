"""The IMAP sync against a real Dovecot: cursor, idempotency, faults, ledger."""

from __future__ import annotations

import pytest

from conversations.models import Conversation, ConversationMessage
from inboxes.models import MailboxFolder, MailboxMessage, Message
from inboxes.sync import mailbox_sync
from tests.support.mail import connect_imap_mailbox, make_email, team_inbox

pytestmark = pytest.mark.django_db


def test_delivered_mail_becomes_conversations_and_a_rerun_changes_nothing(
    support, dovecot, mail_user
):
    inbox, mailbox = support
    for n in range(3):
        dovecot.deliver(mail_user[0], make_email(subject=f"Help {n}"))
    result = mailbox_sync(mailbox.pk)
    assert result.imported == 3
    assert Conversation.objects.filter(inbox=inbox).count() == 3
    mailbox.refresh_from_db()
    assert (mailbox.sync_done, mailbox.sync_total, mailbox.status) == (3, 3, "connected")
    again = mailbox_sync(mailbox.pk)
    assert again.imported == 0
    assert Message.objects.count() == 3 and ConversationMessage.objects.count() == 3


def delivered_ids(inbox):
    return sorted(
        Message.objects.filter(conversations__inbox=inbox).values_list("message_id", flat=True)
    )


def test_initial_sync_imports_only_the_backfill_window_and_no_notifications(
    admin, dovecot, smtp_server, mail_user, monkeypatch
):
    import os
    import time

    routed = []
    monkeypatch.setattr(
        "conversations.threading.conversations_route",
        lambda conversations, notify: routed.extend(notify for _ in conversations),
    )
    old = dovecot.deliver(mail_user[0], make_email(subject="Years ago"))
    ninety_days = time.time() - 90 * 86400
    os.utime(old, (ninety_days, ninety_days))  # Maildir INTERNALDATE is the file's mtime
    dovecot.deliver(mail_user[0], make_email(subject="Last week"))
    inbox = team_inbox(admin.account)
    mailbox = connect_imap_mailbox(
        actor=admin,
        dovecot=dovecot,
        smtp_server=smtp_server,
        user=mail_user,
        address="support@acme.example.com",
        inbox=inbox,
    )
    mailbox_sync(mailbox.pk)
    assert [c.subject for c in Conversation.objects.filter(inbox=inbox)] == ["Last week"]
    assert routed == [False]  # history is filed without routing notifications

    dovecot.deliver(mail_user[0], make_email(subject="Just now"))
    mailbox_sync(mailbox.pk)
    assert routed == [False, True]


def test_no_backfill_limit_imports_everything(admin, dovecot, smtp_server, mail_user):
    import os
    import time

    old = dovecot.deliver(mail_user[0], make_email(subject="Years ago"))
    os.utime(old, (time.time() - 900 * 86400,) * 2)
    inbox = team_inbox(admin.account)
    mailbox = connect_imap_mailbox(
        actor=admin,
        dovecot=dovecot,
        smtp_server=smtp_server,
        user=mail_user,
        address="support@acme.example.com",
        inbox=inbox,
        backfill_days=None,
    )
    mailbox_sync(mailbox.pk)
    assert Conversation.objects.filter(inbox=inbox).count() == 1


def test_one_email_to_two_team_addresses_is_stored_once_and_in_both_inboxes(
    admin, dovecot, smtp_server
):
    users = []
    for _ in range(2):
        user = (f"team{len(users)}x{id(users)}", "pw-" + str(len(users)) + "-long")
        dovecot.add_user(*user)
        smtp_server.add_user(*user)
        users.append(user)
    support, sales = team_inbox(admin.account, "Support"), team_inbox(admin.account, "Sales")
    mailboxes = [
        connect_imap_mailbox(
            actor=admin,
            dovecot=dovecot,
            smtp_server=smtp_server,
            user=users[0],
            address="support@acme.example.com",
            inbox=support,
        ),
        connect_imap_mailbox(
            actor=admin,
            dovecot=dovecot,
            smtp_server=smtp_server,
            user=users[1],
            address="sales@acme.example.com",
            inbox=sales,
        ),
    ]
    raw = make_email(to="support@acme.example.com", cc="sales@acme.example.com", subject="Quote")
    for user in users:
        # each copy carries its own delivery headers, as a real server adds them
        dovecot.deliver(user[0], f"Delivered-To: {user[0]}@acme.example.com\r\n".encode() + raw)
    for mailbox in mailboxes:
        mailbox_sync(mailbox.pk)
    assert Message.objects.count() == 1
    conversations = Conversation.objects.order_by("inbox__name")
    assert [c.inbox.name for c in conversations] == ["Sales", "Support"]
    # each has its own status and assignee
    Conversation.objects.filter(inbox=sales).update(status="closed", assignee=admin)
    assert Conversation.objects.get(inbox=support).status == "open"


def test_a_message_deleted_in_postkamer_is_not_imported_again(
    support, admin, dovecot, mail_user, django_capture_on_commit_callbacks
):
    from conversations.handling import message_delete
    from inboxes.sync import mailbox_resync

    inbox, mailbox = support
    dovecot.deliver(mail_user[0], make_email(subject="Spam"))
    dovecot.deliver(mail_user[0], make_email(subject="Real"))
    mailbox_sync(mailbox.pk)
    spam = Message.objects.get(subject="Spam")
    raw_name = spam.raw.name
    with django_capture_on_commit_callbacks(execute=True):
        message_delete(actor=admin, message=spam)
    mailbox_resync(actor=admin, mailbox=mailbox)  # read everything again
    MailboxMessage.objects.filter(folder__mailbox=mailbox).delete()  # and forget the ledger
    mailbox_sync(mailbox.pk)
    assert list(Message.objects.values_list("subject", flat=True)) == ["Real"]
    from django.core.files.storage import default_storage

    assert not default_storage.exists(raw_name)


def test_a_malformed_message_is_kept_raw_and_the_sync_goes_on(support, dovecot, mail_user):
    inbox, mailbox = support
    dovecot.deliver(mail_user[0], make_email(subject="Before"))
    dovecot.deliver(
        mail_user[0],
        b"From: =?utf-8?B?broken\r\nSubject: \xff\xfe bad\r\nContent-Type: multipart/mixed; "
        b'boundary="x"\r\nContent-Transfer-Encoding: base64\r\n\r\n--x\r\nContent-Type: text/plain'
        b"\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!not base64###\r\n",
    )
    dovecot.deliver(mail_user[0], make_email(subject="After"))
    result = mailbox_sync(mailbox.pk)
    assert result.imported == 3
    assert Message.objects.count() == 3
    for message in Message.objects.all():
        with message.raw.open("rb") as handle:
            assert handle.read()  # the original bytes are kept, whatever parsing made of them
    assert {"Before", "After"} <= set(Message.objects.values_list("subject", flat=True))


def test_reconciliation_finds_and_fills_a_gap_instead_of_reporting_success(
    support, dovecot, mail_user
):
    from inboxes.sync import mailbox_reconcile

    inbox, mailbox = support
    for n in range(4):
        dovecot.deliver(mail_user[0], make_email(subject=f"M{n}"))
    mailbox_sync(mailbox.pk)
    # a bug or a crash lost one import, but the cursor moved on
    lost = MailboxMessage.objects.filter(folder__mailbox=mailbox).order_by("provider_key").first()
    lost.message.delete()
    lost.delete()
    assert Message.objects.count() == 3
    assert mailbox_sync(mailbox.pk).imported == 0  # the cursor alone cannot see it

    result = mailbox_reconcile(mailbox.pk)
    assert (result.missing_before, result.missing_after) == (1, 0)
    assert Message.objects.count() == 4
    folder = MailboxFolder.objects.get(mailbox=mailbox, role="inbox")
    assert folder.server_count == 4 and folder.missing_count == 0 and folder.last_reconciled_at


def test_one_mailbox_is_never_synced_by_two_workers_at_once(support, dovecot, mail_user):
    from inboxes.sync import lease_acquire, lease_release

    inbox, mailbox = support
    dovecot.deliver(mail_user[0], make_email())
    token = lease_acquire(mailbox.pk)
    assert token
    busy = mailbox_sync(mailbox.pk)
    assert not busy.ran and "another worker" in busy.reason
    assert Message.objects.count() == 0
    lease_release(mailbox.pk, token)
    assert mailbox_sync(mailbox.pk).imported == 1


def test_an_expired_lease_of_a_dead_worker_is_taken_over(support, dovecot, mail_user):
    from datetime import timedelta

    from django.utils import timezone

    from inboxes.models import Mailbox
    from inboxes.sync import lease_acquire

    inbox, mailbox = support
    dovecot.deliver(mail_user[0], make_email())
    assert lease_acquire(mailbox.pk)  # a worker took it, then died
    Mailbox.objects.filter(pk=mailbox.pk).update(
        sync_lease_until=timezone.now() - timedelta(seconds=1)
    )
    assert mailbox_sync(mailbox.pk).imported == 1


def test_personal_mail_is_not_stored_without_a_crm_consumer(admin, dovecot, smtp_server, mail_user):
    mailbox = connect_imap_mailbox(
        actor=admin,
        dovecot=dovecot,
        smtp_server=smtp_server,
        user=mail_user,
        address="ann@acme.example.com",
        kind="personal",
    )
    dovecot.deliver(mail_user[0], make_email(to="ann@acme.example.com", subject="Private"))
    assert mailbox_sync(mailbox.pk).imported == 1
    assert Message.objects.count() == 0  # only mail with CRM contacts is kept (CRM issue)
    ledger = MailboxMessage.objects.get(folder__mailbox=mailbox)
    assert ledger.message is None and ledger.dedupe_key  # but it is never fetched again
    assert mailbox_sync(mailbox.pk).imported == 0


def test_a_personal_mail_consumer_receives_the_mail_it_keeps(
    admin, dovecot, smtp_server, mail_user
):
    from inboxes import consumers

    class Crm:
        delivered = []

        def keeps(self, mailbox, parsed):
            return parsed.subject == "Deal"

        def deliver(self, mailbox, messages, *, backfill):
            self.delivered.extend(m.subject for m in messages)

    crm = Crm()
    consumers.register_mail_consumer("personal", crm)
    try:
        mailbox = connect_imap_mailbox(
            actor=admin,
            dovecot=dovecot,
            smtp_server=smtp_server,
            user=mail_user,
            address="ann@acme.example.com",
            kind="personal",
        )
        dovecot.deliver(mail_user[0], make_email(subject="Deal"))
        dovecot.deliver(mail_user[0], make_email(subject="Private"))
        mailbox_sync(mailbox.pk)
    finally:
        consumers.unregister_mail_consumer("personal", crm)
    assert crm.delivered == ["Deal"]
    assert list(Message.objects.values_list("subject", flat=True)) == ["Deal"]


def test_a_wrong_password_stops_the_sync_with_a_clear_error(support, dovecot, mail_user):
    from inboxes.models import Mailbox
    from inboxes.providers.base import ProviderError
    from inboxes.sync import mailboxes_due

    inbox, mailbox = support
    dovecot.add_user(mail_user[0], "changed-by-the-owner")
    with pytest.raises(ProviderError) as excinfo:
        mailbox_sync(mailbox.pk)
    assert excinfo.value.permanent
    mailbox = Mailbox.objects.get(pk=mailbox.pk)
    assert mailbox.status == "error" and mailbox.sync_state == "stopped"
    assert "login failed" in mailbox.last_error.lower()
    assert mailbox.pk not in mailboxes_due()
    assert not mailbox_sync(mailbox.pk).ran


def test_the_api_shows_progress_and_the_ledger_and_admins_can_resync(
    support, admin, dovecot, mail_user, django_capture_on_commit_callbacks
):
    from tests.support.api import api_client_for

    inbox, mailbox = support
    for _ in range(2):
        dovecot.deliver(mail_user[0], make_email())
    mailbox_sync(mailbox.pk)
    api = api_client_for(admin)
    body = api.get(f"/api/v1/mailboxes/{mailbox.pk}/").json()
    assert body["sync"]["done"] == 2 and body["sync"]["total"] == 2
    assert body["sync"]["state"] == "idle" and body["sync"]["last_synced_at"]
    [folder] = body["folders"]
    assert folder["role"] == "inbox" and folder["imported_count"] == 2
    assert folder["server_count"] == 2 and folder["alert"] == ""

    with django_capture_on_commit_callbacks() as callbacks:
        response = api.post(f"/api/v1/mailboxes/{mailbox.pk}/resync/")
    assert response.status_code == 200
    assert len(callbacks) == 1  # a sync is queued once the request commits
    assert MailboxFolder.objects.get(mailbox=mailbox).cursor == {}
    mailbox_sync(mailbox.pk)
    assert Message.objects.count() == 2  # read again, nothing duplicated


def test_members_cannot_resync(support, member, admin):
    from tests.support.api import api_client_for

    inbox, mailbox = support
    assert api_client_for(member).post(f"/api/v1/mailboxes/{mailbox.pk}/resync/").status_code == 404
