"""How the sync batches, stores and connects, against a real Dovecot and PostgreSQL:
batches bounded by bytes, files written before the rows that refer to them,
planner statistics refreshed during a first import, IMAP sessions kept between
syncs."""

from __future__ import annotations

import os
import time

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, default_storage
from django.db import connection

from conversations.models import Conversation
from inboxes.mime import parse_message
from inboxes.models import Attachment, MailboxMessage, Message
from inboxes.providers.imap import session as imap_session
from inboxes.sync import folders, ingest, mailbox_sync
from tests.support.mail import make_email

pytestmark = pytest.mark.django_db

MIB = 1024 * 1024


@pytest.fixture
def ingested_batches(monkeypatch):
    """The raw bytes of each batch the sync ingests, in order."""
    batches: list[list[int]] = []
    original = folders.ingest_batch

    def recording(**kwargs):
        if kwargs["raws"]:
            batches.append([len(item.raw) for item in kwargs["raws"]])
        return original(**kwargs)

    monkeypatch.setattr(folders, "ingest_batch", recording)
    return batches


def big_email(subject: str, size: int) -> bytes:
    """A plain-text email of about ``size`` bytes."""
    line = os.urandom(38).hex()  # 76 characters
    return make_email(subject=subject, body=(line + "\n") * (size // 77))


def test_big_messages_come_in_batches_bounded_by_bytes_and_all_are_stored(
    support, dovecot, mail_user, ingested_batches
):
    inbox, mailbox = support
    for n in range(7):
        dovecot.deliver(mail_user[0], big_email(f"Scan {n}", int(1.5 * MIB)))
    for n in range(5):
        dovecot.deliver(mail_user[0], make_email(subject=f"Small {n}"))

    result = mailbox_sync(mailbox.pk)

    assert result.imported == 12
    assert Conversation.objects.filter(inbox=inbox).count() == 12
    assert len(ingested_batches) > 1
    for sizes in ingested_batches:
        # about FETCH_BATCH_BYTES (the server's RFC822.SIZE counts CRLF line ends)
        assert sum(sizes) <= imap_session.FETCH_BATCH_BYTES * 1.05
        assert len(sizes) <= imap_session.FETCH_BATCH_MESSAGES
    assert sum(len(sizes) for sizes in ingested_batches) == 12
    assert mailbox_sync(mailbox.pk).imported == 0


def test_a_message_bigger_than_a_batch_comes_alone_and_is_stored(
    support, dovecot, mail_user, ingested_batches
):
    inbox, mailbox = support
    dovecot.deliver(mail_user[0], make_email(subject="Before"))
    dovecot.deliver(mail_user[0], big_email("Huge scan", 3 * imap_session.FETCH_BATCH_BYTES))
    dovecot.deliver(mail_user[0], make_email(subject="After"))

    assert mailbox_sync(mailbox.pk).imported == 3

    assert [len(sizes) for sizes in ingested_batches] == [1, 1, 1]
    huge = Message.objects.get(subject="Huge scan")
    assert huge.raw_size > 3 * imap_session.FETCH_BATCH_BYTES
    with default_storage.open(huge.raw.name) as stored:
        assert len(stored.read()) == huge.raw_size
    assert sorted(Conversation.objects.filter(inbox=inbox).values_list("subject", flat=True)) == [
        "After",
        "Before",
        "Huge scan",
    ]


def email_with_attachments(subject: str, count: int) -> bytes:
    from email.message import EmailMessage

    mime = EmailMessage()
    mime["From"] = "carol@customer.example.com"
    mime["To"] = "support@acme.example.com"
    mime["Subject"] = subject
    mime.set_content("See attached.\n")
    for n in range(count):
        mime.add_attachment(
            os.urandom(2000), maintype="application", subtype="pdf", filename=f"doc{n}.pdf"
        )
    return mime.as_bytes()


@pytest.mark.django_db(transaction=True)
def test_every_raw_mime_and_attachment_file_is_complete_before_its_rows_commit(
    support, dovecot, mail_user, monkeypatch
):
    inbox, mailbox = support
    for n in range(6):
        dovecot.deliver(mail_user[0], email_with_attachments(f"Invoice {n}", n % 3))
    checked = {"commits": 0, "messages": 0, "attachments": 0}
    real_commit = connection.commit

    def checking_commit():
        # Inside the transaction, right before COMMIT: every row it holds has its files.
        for message in Message.objects.all():
            with default_storage.open(message.raw.name) as f:
                assert len(f.read()) == message.raw_size
            checked["messages"] += 1
        for attachment in Attachment.objects.all():
            with default_storage.open(attachment.file.name) as f:
                assert len(f.read()) == attachment.size == 2000
            checked["attachments"] += 1
        checked["commits"] += 1
        return real_commit()

    # The file writes take their time: the transaction's inserts and threading go
    # on meanwhile, and the commit waits for them.
    original_save = FileSystemStorage._save

    def slow_save(self, name, content):
        time.sleep(0.05)
        return original_save(self, name, content)

    monkeypatch.setattr(FileSystemStorage, "_save", slow_save)
    monkeypatch.setattr(connection, "commit", checking_commit)
    assert mailbox_sync(mailbox.pk).imported == 6
    assert checked["commits"] >= 1
    assert Message.objects.count() == 6 and Attachment.objects.count() == 6
    assert checked["messages"] >= 6 and checked["attachments"] >= 6


@pytest.mark.django_db(transaction=True)
def test_a_failed_file_write_rolls_the_batch_back_and_the_next_sync_stores_it_once(
    support, dovecot, mail_user, monkeypatch
):
    inbox, mailbox = support
    for n in range(4):
        dovecot.deliver(mail_user[0], email_with_attachments(f"Invoice {n}", 1))
    original_save = FileSystemStorage._save

    def disk_full(self, name, content):
        if name.startswith("attachments/"):
            raise OSError(28, "No space left on device")
        return original_save(self, name, content)

    monkeypatch.setattr(FileSystemStorage, "_save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        mailbox_sync(mailbox.pk)
    assert Message.objects.count() == 0 and MailboxMessage.objects.count() == 0
    mailbox.refresh_from_db()
    assert mailbox.sync_lease_token == ""

    monkeypatch.setattr(FileSystemStorage, "_save", original_save)
    assert mailbox_sync(mailbox.pk).imported == 4
    assert Message.objects.count() == 4 and Attachment.objects.count() == 4
    assert Conversation.objects.filter(inbox=inbox).count() == 4


def test_a_partial_raw_file_left_by_a_killed_worker_is_not_reused(support, dovecot, mail_user):
    inbox, mailbox = support
    raw = email_with_attachments("Invoice 7", 1)
    dovecot.deliver(mail_user[0], raw)
    stored = dovecot.maildir(mail_user[0])
    delivered = next(
        p for p in stored.rglob("*") if p.is_file() and "Invoice 7" in p.read_text(errors="replace")
    )
    key = parse_message(delivered.read_bytes()).dedupe_key
    partial_name = ingest._raw_name(mailbox.account_id, key)
    default_storage.save(partial_name, ContentFile(delivered.read_bytes()[:100]))

    assert mailbox_sync(mailbox.pk).imported == 1
    message = Message.objects.get()
    assert message.raw.name != partial_name
    with default_storage.open(message.raw.name) as f:
        content = f.read()
    assert len(content) == message.raw_size > 100
    assert parse_message(content).dedupe_key == key


def test_a_message_stored_before_is_delivered_from_its_row(support, dovecot, mail_user):
    """The batch uses its own new rows from memory, and loads the rows it did not
    create: the same email seen again after a resync joins its conversation once."""
    inbox, mailbox = support
    dovecot.deliver(mail_user[0], make_email(subject="Twice"))
    assert mailbox_sync(mailbox.pk).imported == 1
    # forget the ledger (as a resync of a reset folder does): the message row exists
    MailboxMessage.objects.all().delete()
    from inboxes.models import MailboxFolder

    MailboxFolder.objects.filter(mailbox=mailbox).update(cursor={})
    assert mailbox_sync(mailbox.pk).imported == 1
    assert Message.objects.count() == 1
    conversation = Conversation.objects.get(inbox=inbox)
    assert conversation.messages.count() == 1
    assert MailboxMessage.objects.get().message_id == Message.objects.get().pk


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="ANALYZE is run on PostgreSQL only (its planner)"
)
def test_a_first_import_refreshes_the_planner_statistics_once_past_each_threshold(
    support, dovecot, mail_user, monkeypatch
):
    inbox, mailbox = support
    monkeypatch.setattr(folders, "ANALYZE_AFTER", (3, 7))
    monkeypatch.setattr(imap_session, "FETCH_BATCH_MESSAGES", 2)
    for n in range(8):
        dovecot.deliver(mail_user[0], make_email(subject=f"Old {n}"))
    analyzed: list[tuple[str, int]] = []

    def spy(execute, sql, params, many, context):
        if sql.startswith("ANALYZE"):
            analyzed.append((sql, Message.objects.count()))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(spy):
        assert mailbox_sync(mailbox.pk).imported == 8
    tables = [
        connection.ops.quote_name(model._meta.db_table) for model in folders.analyzed_models()
    ]
    # batches of 2: past 3 after the second batch (4 stored), past 7 after the fourth (8)
    assert analyzed == [(f"ANALYZE {t}", 4) for t in tables] + [(f"ANALYZE {t}", 8) for t in tables]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT reltuples FROM pg_class WHERE relname = %s", [Message._meta.db_table]
        )
        assert cursor.fetchone()[0] == 8  # the statistics ANALYZE left

    # later syncs (not a first import) never analyze
    analyzed.clear()
    for n in range(8):
        dovecot.deliver(mail_user[0], make_email(subject=f"New {n}"))
    with connection.execute_wrapper(spy):
        assert mailbox_sync(mailbox.pk).imported == 8
    assert analyzed == []


@pytest.mark.django_db(transaction=True)
def test_a_sync_the_watcher_triggers_runs_over_its_logged_in_session(
    support, dovecot, mail_user, monkeypatch
):
    import threading
    import time

    from django.conf import settings

    from inboxes.sync import watch

    inbox, mailbox = support
    monkeypatch.setattr(settings, "IDLE_RENEW_SECONDS", 1)
    logins: list[str] = []
    original = imap_session.ImapSession._login
    monkeypatch.setattr(
        imap_session.ImapSession,
        "_login",
        lambda self, client: (
            logins.append(threading.current_thread().name),
            original(self, client),
        ),
    )
    syncs: list[int] = []

    def on_change(mailbox_id):
        syncs.append(mailbox_sync(mailbox_id).imported)

    stop = threading.Event()
    watcher = threading.Thread(
        target=watch.watch_mailbox, args=(mailbox.pk, on_change, stop), name="watcher"
    )
    watcher.start()
    try:
        deadline = time.monotonic() + 15
        while not syncs and time.monotonic() < deadline:  # its catch-up sync
            time.sleep(0.02)
        dovecot.deliver(mail_user[0], make_email(subject="Pushed"))
        while sum(syncs) < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop.set()
        watcher.join(10)
    assert sum(syncs) == 1 and len(syncs) >= 2
    assert Conversation.objects.filter(inbox=inbox, subject="Pushed").exists()
    assert logins == ["watcher"], "the syncs it triggered logged in again"

    # A sync it did not trigger (a poll, a worker) logs in itself: a password
    # changed on the server shows at once, it is not hidden by a kept session.
    dovecot.add_user(mail_user[0], "changed-by-the-owner")
    from inboxes.providers.base import ProviderError

    with pytest.raises(ProviderError, match="login failed"):
        mailbox_sync(mailbox.pk)
    assert len(logins) == 2


def test_the_next_batches_are_fetched_and_parsed_while_one_is_ingested_but_no_more(
    support, dovecot, mail_user, monkeypatch
):
    """While batch k is stored, batch k+1 is with the parse helper and batch k+2 is
    fetched; batch k+3 waits until batch k is done (three batches in memory)."""
    import threading
    import time

    inbox, mailbox = support
    monkeypatch.setattr(imap_session, "FETCH_BATCH_MESSAGES", 2)
    for n in range(8):
        dovecot.deliver(mail_user[0], make_email(subject=f"Ticket {n}"))
    events: list[tuple[str, int, str]] = []
    original_fetch = imap_session.ImapSession._fetch_batch
    original_ingest = folders.ingest_batch

    def fetch(self, prefix, uids):
        events.append(("fetch", len([e for e in events if e[0] == "fetch"]) + 1, ""))
        return original_fetch(self, prefix, uids)

    def ingest(**kwargs):
        if kwargs["raws"]:
            number = len([e for e in events if e[0] == "ingest"]) + 1
            events.append(("ingest", number, threading.current_thread().name))
            time.sleep(0.3)  # a slow batch: the fetcher must be waiting, not racing ahead
            events.append(("ingested", number, ""))
        return original_ingest(**kwargs)

    monkeypatch.setattr(imap_session.ImapSession, "_fetch_batch", fetch)
    monkeypatch.setattr(folders, "ingest_batch", ingest)

    assert mailbox_sync(mailbox.pk).imported == 8

    assert Conversation.objects.filter(inbox=inbox).count() == 8
    order = [(kind, n) for kind, n, _ in events]
    assert order.count(("fetch", 4)) == 1 and ("fetch", 5) not in order
    for k in (1, 2):
        # batches k+1 and k+2 are fetched before batch k is ingested ...
        assert order.index(("fetch", k + 2)) < order.index(("ingested", k))
    # ... and batch k+3 only once batch k is done
    assert order.index(("fetch", 4)) > order.index(("ingested", 1))
    # the database work stays on the sync's own thread
    assert {name for kind, _, name in events if kind == "ingest"} == {
        threading.current_thread().name
    }


@pytest.mark.django_db(transaction=True)
def test_watch_mailboxes_sync_here_records_a_failed_sync_and_goes_on(support, dovecot, mail_user):
    from inboxes.management.commands.watch_mailboxes import sync_in_watcher

    inbox, mailbox = support
    dovecot.deliver(mail_user[0], make_email(subject="Pushed"))
    sync_in_watcher(str(mailbox.pk))
    assert Conversation.objects.filter(inbox=inbox, subject="Pushed").exists()

    dovecot.add_user(mail_user[0], "changed-by-the-owner")
    sync_in_watcher(str(mailbox.pk))  # no exception: the watcher thread goes on
    mailbox.refresh_from_db()
    assert (mailbox.status, mailbox.sync_state) == ("error", "stopped")
    assert "login failed" in mailbox.last_error.lower()


def test_a_parse_helper_killed_mid_sync_loses_and_duplicates_nothing(
    support, dovecot, mail_user, monkeypatch, caplog
):
    import logging
    import signal

    from inboxes.sync import parse_helper

    inbox, mailbox = support
    monkeypatch.setattr(imap_session, "FETCH_BATCH_MESSAGES", 2)
    for n in range(9):
        dovecot.deliver(mail_user[0], make_email(subject=f"Ticket {n}"))
    parse_helper.process_helper_stop()
    original = folders.ingest_batch
    killed = []

    def ingest(**kwargs):
        helper = parse_helper._helper[1] if parse_helper._helper else None
        if kwargs["raws"] and not killed and helper is not None:
            os.kill(helper.pid, signal.SIGKILL)  # while it holds the next batch
            killed.append(helper.pid)
        return original(**kwargs)

    monkeypatch.setattr(folders, "ingest_batch", ingest)
    with caplog.at_level(logging.WARNING, logger="inboxes.sync.parse_helper"):
        assert mailbox_sync(mailbox.pk).imported == 9

    assert killed
    assert any("parse helper failed" in r.getMessage() for r in caplog.records)
    subjects = sorted(Message.objects.values_list("subject", flat=True))
    assert subjects == [f"Ticket {n}" for n in range(9)]
    assert Conversation.objects.filter(inbox=inbox).count() == 9
    assert MailboxMessage.objects.filter(folder__mailbox=mailbox).count() == 9
    assert mailbox_sync(mailbox.pk).imported == 0
    helper = parse_helper.process_helper()  # the next sync has a new one
    assert helper is not None and helper.pid not in killed
