"""Faults, each checked for "nothing lost, nothing duplicated, a clear error"
(docs: reliability.md sections 1, 5 and 9).

The source of truth is what Dovecot holds (its Message-IDs) and what aiosmtpd
received; the engine's answer is Message and ConversationMessage rows and the
outbox states. Tests with a real worker use tests/support/workers.py.
"""

from __future__ import annotations

import email
import os
import threading
from datetime import timedelta
from email import policy
from pathlib import Path

import pytest
from django.db import connection, transaction
from django.utils import timezone

from audit.models import AuditEvent
from conversations.handling import conversation_reply
from conversations.models import Conversation
from inboxes.models import Mailbox, MailboxFolder, MailboxMessage, Message, OutboxItem
from inboxes.outbox import enqueue_send_run, outbox_resolve_unknown, outbox_sweep
from inboxes.providers.base import ProviderError
from inboxes.sync import mailbox_sync, mailboxes_due
from tests.support.mail import connect_imap_mailbox, make_email, send_due, team_inbox

# tests.support.workers is a plugin (fixtures) and a helper module: have pytest rewrite
# its asserts although this module imports it before pytest_plugins is read.
pytest.register_assert_rewrite("tests.support.workers")
from tests.support.workers import (  # noqa: E402
    assert_stored_exactly_once,
    imap_client,
    queued_count,
    server_message_ids,
    switch_app_broker_connections,
    wait_until,
)

pytest_plugins = ["tests.support.workers"]

SUPPORT = "support@acme.example.com"
NOT_RESENT = "It was not sent again automatically"


def header(raw: bytes, name: str) -> str:
    return str(email.message_from_bytes(raw, policy=policy.default)[name] or "")


def received_with(smtp_server, message_id: str) -> list:
    return [m for m in smtp_server.messages if header(m.data, "Message-ID") == message_id]


def connect_support(admin, dovecot, smtp_server, mail_user, **kwargs):
    inbox = team_inbox(admin.account, from_name="Acme Support")
    mailbox = connect_imap_mailbox(
        actor=admin,
        dovecot=dovecot,
        smtp_server=smtp_server,
        user=mail_user,
        address=SUPPORT,
        inbox=inbox,
        **kwargs,
    )
    return inbox, mailbox


def through(proxy, mailbox) -> None:
    """Point the mailbox's IMAP connection at ``proxy`` (in front of Dovecot)."""
    Mailbox.objects.filter(pk=mailbox.pk).update(imap_port=proxy.port)


def deliver_many(dovecot, mail_user, count: int, body_size: int = 0) -> int:
    """Deliver ``count`` distinct messages; returns their total size in bytes."""
    total = 0
    for n in range(count):
        raw = make_email(subject=f"Order {n}", body=f"Order {n}\n" + "x" * body_size + "\n")
        dovecot.deliver(mail_user[0], raw)
        total += len(raw)
    return total


def uids_stored(folder: MailboxFolder) -> list[int]:
    return sorted(
        int(key.rsplit(":", 1)[1])
        for key in MailboxMessage.objects.filter(folder=folder).values_list(
            "provider_key", flat=True
        )
    )


def reply_to(admin, conversation, text: str = "We are on it."):
    with transaction.atomic():
        message = conversation_reply(actor=admin, conversation=conversation, text=text)
    return message, OutboxItem.objects.get(message=message)


# --- IMAP connection dropped mid-FETCH ----------------------------------------------------------


@pytest.mark.django_db
def test_a_connection_dropped_mid_fetch_loses_nothing_and_the_next_sync_completes_it(
    admin, dovecot, smtp_server, mail_user, imap_proxy
):
    """The cursor stored after each batch must let the next sync resume there.
    (Guards against a per-batch cursor that carries the folder's UIDNEXT and
    HIGHESTMODSEQ: the next sync's "nothing new" probe then matched, the rest of
    the folder was skipped and the cursor jumped past it.)"""
    # 250 messages: the sync stores them in batches of 100 (INGEST_BATCH)
    size = deliver_many(dovecot, mail_user, 250, body_size=2000)
    inbox, mailbox = connect_support(admin, dovecot, smtp_server, mail_user, backfill_days=None)
    through(imap_proxy, mailbox)
    # cut halfway through the second batch's FETCH: the first batch is in
    imap_proxy.cut_after = int(size / 250 * 150) + 20_000

    with pytest.raises(ProviderError) as failure:
        mailbox_sync(mailbox.pk)
    assert not failure.value.permanent
    assert imap_proxy.cuts == 1
    mailbox.refresh_from_db()
    assert mailbox.sync_state == "error"
    assert "IMAP connection problem" in mailbox.sync_last_error
    assert mailbox.pk in mailboxes_due()  # transient: the next poll tries again

    # the cursor is never ahead of what is stored
    folder = MailboxFolder.objects.get(mailbox=mailbox, role="inbox")
    stored = uids_stored(folder)
    assert len(stored) == 100 == Message.objects.count()
    assert stored == list(range(1, 101))
    assert folder.cursor["last_uid"] == 100

    imap_proxy.cut_after = None
    result = mailbox_sync(mailbox.pk)
    mailbox.refresh_from_db()
    assert (mailbox.sync_state, mailbox.sync_last_error) == ("idle", "")
    assert_stored_exactly_once(inbox, server_message_ids(dovecot, mail_user))
    assert result.imported == 150, "the resumed sync must import the 150 messages left"


@pytest.mark.django_db
def test_history_stays_quiet_when_an_interrupted_first_sync_resumes(
    admin, dovecot, smtp_server, mail_user, imap_proxy, monkeypatch
):
    """Imported history never notifies (no assignment, notification or auto-reply),
    also when the first sync was interrupted and finished by a later one.
    (Fails while _sync_folder decides "history" by an empty cursor alone: the
    resumed sync files the rest of the history as new mail.)"""
    routed: list[tuple[str, bool]] = []
    monkeypatch.setattr(
        "conversations.threading.conversations_route",
        lambda conversations, notify: routed.extend((c.subject, notify) for c in conversations),
    )
    size = deliver_many(dovecot, mail_user, 150, body_size=2000)
    inbox, mailbox = connect_support(admin, dovecot, smtp_server, mail_user, backfill_days=None)
    through(imap_proxy, mailbox)
    imap_proxy.cut_after = int(size / 150 * 125) + 20_000
    with pytest.raises(ProviderError):
        mailbox_sync(mailbox.pk)
    assert len(routed) == 100

    # new mail arrives before the next sync, which also finishes the history
    dovecot.deliver(mail_user[0], make_email(subject="Brand new"))
    imap_proxy.cut_after = None
    mailbox_sync(mailbox.pk)
    assert_stored_exactly_once(inbox, server_message_ids(dovecot, mail_user))
    notified = sorted(subject for subject, notify in routed if notify)
    assert notified == ["Brand new"], f"{len(notified)} history conversations were notified"


# --- A worker killed mid-sync -------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_sync_is_taken_over_after_its_lease_and_nothing_is_lost(
    imap_proxy, engine, admin, dovecot, smtp_server, mail_user
):
    """SIGKILL of the pool children during a 400-message sync; the lease (5 s)
    runs out and beat's poll resumes the sync on a new child, from the cursor
    the dead one committed (see the dropped connection above)."""
    deliver_many(dovecot, mail_user, 400, body_size=3000)
    source = server_message_ids(dovecot, mail_user)
    imap_proxy.rate = 600_000  # a slow link: the sync takes seconds, not milliseconds
    worker = engine.worker()
    with transaction.atomic():
        inbox, mailbox = connect_support(admin, dovecot, smtp_server, mail_user, backfill_days=None)
        through(imap_proxy, mailbox)  # before the first sync (scheduled on commit) starts

    def part_done():
        done = Mailbox.objects.filter(pk=mailbox.pk).values_list("sync_done", flat=True)[0]
        assert done < 400, "the sync finished before it could be interrupted"
        return done > 0

    wait_until(part_done, 20, "the first batch", interval=0.01)
    killed = worker.kill_children()
    killed_at = timezone.now()
    stored_at_kill = Message.objects.count()
    assert 0 < stored_at_kill < 400
    worker.wait_for_log(r"WorkerLostError|exited with 'signal 9", timeout=10)
    assert not set(killed) & set(worker.child_pids())

    # The lease of the dead child runs out (5 s); beat's poll (2 s) starts a sync
    # on a new child, which resumes from the committed cursor.
    engine.beat()
    wait_until(
        lambda: Mailbox.objects.filter(
            pk=mailbox.pk, sync_state="idle", last_synced_at__gt=killed_at
        ).exists(),
        30,
        "a complete sync after the kill",
    )
    assert_stored_exactly_once(inbox, source)
    assert Conversation.objects.filter(inbox=inbox).count() == 400


# --- A worker killed mid-send -------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_send_never_sends_twice(engine, admin, dovecot, smtp_server, mail_user):
    """Killed while the server holds the DATA reply: the outcome is unknown, the
    item is never sent again and says why. Killed before DATA: sent once.
    A goes out in the mailbox's send run; B in a second run of the mailbox beside
    it (as the sweeper publishes one, forced past the run lease)."""
    dovecot.deliver(mail_user[0], make_email(subject="Where is my order?"))
    worker = engine.worker()
    inbox, mailbox = connect_support(admin, dovecot, smtp_server, mail_user)
    conversation = wait_until(
        lambda: Conversation.objects.filter(inbox=inbox).first(), 15, "the customer's mail"
    )
    smtp_server.clear()

    # A: the server took the data and does not answer
    smtp_server.hold_data_reply(60)
    message_a, item_a = reply_to(admin, conversation, "Your order left today.")
    smtp_server.wait_for_hold(1, timeout=15)
    # B: the server does not answer MAIL FROM; nothing of the message went out.
    # A's run holds the mailbox's run lease, so B's commit publishes no second run;
    # a forced one (the sweeper's) claims B beside A's.
    smtp_server.hold_mail_reply(60)
    message_b, item_b = reply_to(admin, conversation, "Tracking number: 42.")
    assert queued_count(engine.broker_url, "send") == 0
    enqueue_send_run(mailbox.pk, force=True)
    smtp_server.wait_for_hold(2, timeout=15)
    item_a.refresh_from_db()
    item_b.refresh_from_db()
    assert (item_a.state, item_b.state) == ("sending", "sending")
    assert item_a.data_started_at is not None and item_b.data_started_at is None
    assert len(received_with(smtp_server, message_a.message_id)) == 1

    worker.kill_children()
    # the requeued tasks run again on new children and find the items claimed
    engine.beat()  # the sweeper, every 2 s; the send lease is 5 s
    wait_until(
        lambda: (
            OutboxItem.objects.filter(pk=item_b.pk, state="sent").exists()
            and OutboxItem.objects.filter(
                pk=item_a.pk, state="unknown", detail__contains=NOT_RESENT
            ).exists()
        ),
        30,
        "the sweeper to settle both items",
    )
    # (B was sent after a sweep that came after A's unknown mark) and one more
    sweeps = worker.tasks_succeeded("inboxes.tasks.sweep_outbox")
    wait_until(lambda: worker.tasks_succeeded("inboxes.tasks.sweep_outbox") > sweeps, 10, "a sweep")

    item_a.refresh_from_db()
    item_b.refresh_from_db()
    assert item_a.state == "unknown" and item_a.attempts == 1
    assert "Delivery could not be confirmed" in item_a.detail
    assert len(received_with(smtp_server, message_a.message_id)) == 1
    assert item_b.state == "sent" and item_b.attempts == 2
    assert len(received_with(smtp_server, message_b.message_id)) == 1
    assert len(smtp_server.messages) == 2


@pytest.mark.django_db
def test_a_drop_after_data_is_unknown_never_resent_and_resolved_by_the_sent_folder(
    admin, dovecot, smtp_server, mail_user
):
    dovecot.deliver(mail_user[0], make_email(subject="Refund?"))
    inbox, mailbox = connect_support(admin, dovecot, smtp_server, mail_user)
    mailbox_sync(mailbox.pk)
    conversation = Conversation.objects.get(inbox=inbox)
    smtp_server.clear()
    smtp_server.drop_after_data()
    message, item = reply_to(admin, conversation, "Refunded.")

    assert send_due(item) == "unknown"
    assert smtp_server.drops == 1
    item.refresh_from_db()
    assert item.state == "unknown" and NOT_RESENT in item.detail
    assert len(received_with(smtp_server, message.message_id)) == 1

    # neither a later run nor the sweeper sends it again
    assert send_due(item) == "unknown"
    outbox_sweep()
    assert outbox_resolve_unknown(item.pk) == "unknown"
    assert len(received_with(smtp_server, message.message_id)) == 1

    # the provider kept a copy of what it relayed: the lookup finds it
    raw = received_with(smtp_server, message.message_id)[0].data
    with imap_client(dovecot, mail_user) as client:
        client.create_folder("Sent")
        client.append("Sent", raw)
    assert outbox_resolve_unknown(item.pk) == "sent"
    item.refresh_from_db()
    assert item.state == "sent" and "Found in the Sent folder" in item.detail
    assert len(received_with(smtp_server, message.message_id)) == 1


@pytest.mark.django_db(transaction=True)
def test_a_send_slower_than_its_lease_is_not_sent_twice(
    admin, dovecot, smtp_server, mail_user, settings
):
    """A live worker whose server answers slowly (a tarpit) past the send lease
    looks dead to the sweeper, which queues the item again; the new claim sends
    it. The slow worker must then not send it too. (Fails while the run's marks
    before DATA do not check that the claim is still its own.)"""
    dovecot.deliver(mail_user[0], make_email(subject="Slow server"))
    inbox, mailbox = connect_support(admin, dovecot, smtp_server, mail_user)
    mailbox_sync(mailbox.pk)
    conversation = Conversation.objects.get(inbox=inbox)
    smtp_server.clear()
    smtp_server.hold_mail_reply(10)
    message, item = reply_to(admin, conversation, "Patience.")

    outcome: dict[str, object] = {}

    def slow_worker() -> None:
        try:
            outcome["slow"] = send_due(item)
        except Exception as exc:  # reported below
            outcome["slow"] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=slow_worker)
    thread.start()
    try:
        smtp_server.wait_for_hold(1, timeout=10)  # MAIL FROM is waiting for its answer
        settings.OUTBOX_SEND_LEASE_SECONDS = 0  # the lease ran out meanwhile
        assert outbox_sweep()["recovered"] == 1  # nothing went out yet: queued again
        assert send_due(item) == "sent"  # the re-published run
    finally:
        smtp_server.release_holds()  # the slow server answers at last
        thread.join(timeout=20)
    assert not thread.is_alive()
    assert not isinstance(outcome["slow"], Exception), outcome["slow"]
    item.refresh_from_db()
    assert item.state == "sent"
    assert len(received_with(smtp_server, message.message_id)) == 1


# --- UIDVALIDITY changed ----------------------------------------------------------------------------


def _uidvalidity(dovecot, mail_user) -> int:
    with imap_client(dovecot, mail_user) as client:
        return int(client.select_folder("INBOX", readonly=True)[b"UIDVALIDITY"])


@pytest.mark.django_db
def test_a_new_uidvalidity_rereads_the_folder_without_duplicates_and_says_so(
    admin, dovecot, smtp_server, mail_user
):
    for n in range(5):
        dovecot.deliver(mail_user[0], make_email(subject=f"Ticket {n}"))
    inbox, mailbox = connect_support(admin, dovecot, smtp_server, mail_user)
    assert mailbox_sync(mailbox.pk).imported == 5
    before = _uidvalidity(dovecot, mail_user)

    # Dovecot forgets the folder's UIDs (as after a restore or a server move):
    # without its uidlist and indexes it numbers the messages anew.
    maildir = dovecot.maildir(mail_user[0])
    for path in Path(maildir).iterdir():
        if path.name == "dovecot-uidlist" or path.name.startswith("dovecot.index"):
            os.unlink(path)
    assert _uidvalidity(dovecot, mail_user) != before
    dovecot.deliver(mail_user[0], make_email(subject="Ticket after the reset"))

    result = mailbox_sync(mailbox.pk)
    assert result.imported == 6  # all read again ...
    assert_stored_exactly_once(inbox, server_message_ids(dovecot, mail_user))  # ... none twice
    assert Conversation.objects.filter(inbox=inbox).count() == 6
    folder = MailboxFolder.objects.get(mailbox=mailbox, role="inbox")
    assert folder.resync_count == 1
    assert "UIDVALIDITY changed" in folder.alert
    event = AuditEvent.objects.get(action="mailbox.folder_reset")
    assert event.target_id == str(mailbox.pk) and event.data["folder"] == "INBOX"
    assert mailbox_sync(mailbox.pk).imported == 0
    assert MailboxFolder.objects.get(pk=folder.pk).resync_count == 1


# --- Redis restarted with tasks queued ------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_sends_lost_with_a_redis_restart_are_republished_and_sent_once(
    private_engine, private_redis, admin, dovecot, smtp_server, mail_user
):
    dovecot.deliver(mail_user[0], make_email(subject="Three questions"))
    inbox, mailbox = connect_support(admin, dovecot, smtp_server, mail_user)
    mailbox_sync(mailbox.pk)
    conversation = Conversation.objects.get(inbox=inbox)
    smtp_server.clear()
    items = [reply_to(admin, conversation, f"Answer {n}")[1] for n in range(3)]
    assert queued_count(private_redis.url(), "send") == 1  # one send run for the three

    private_redis.restart()  # no persistence: the queued tasks are gone
    switch_app_broker_connections()
    assert queued_count(private_redis.url(), "send") == 0
    assert {i.state for i in OutboxItem.objects.filter(pk__in=[i.pk for i in items])} == {"queued"}
    # Some seconds pass before the engine is back: all three are past the sweeper's
    # grace period at its first look (else one written a moment after the others may
    # go with their run before the sweeper counts it).
    OutboxItem.objects.filter(pk__in=[i.pk for i in items]).update(
        created_at=timezone.now() - timedelta(seconds=10)
    )

    worker = private_engine.worker(wait=False)
    private_engine.beat()  # the sweeper re-publishes queued items from the database
    worker.wait_ready()
    wait_until(
        lambda: OutboxItem.objects.filter(pk__in=[i.pk for i in items], state="sent").count() == 3,
        30,
        "all three replies to be sent",
    )
    for item in items:
        assert len(received_with(smtp_server, item.message.message_id)) == 1
        item.refresh_from_db()
        assert item.attempts == 1
    assert len(smtp_server.messages) == 3
    # it was the sweeper: nothing else knew about these sends after the restart
    assert sum(int(n) for n in worker.matches(r"'requeued': (\d+)")) >= 3


# --- A wrong password -----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_wrong_password_stops_the_sync_once_without_retrying_or_polling(
    imap_proxy, engine, admin, dovecot, smtp_server, mail_user
):
    from inboxes.tasks import sync_mailbox

    polls = r"(?m)Task inboxes.tasks.sync_due_mailboxes\[[^\]]+\] succeeded in [\d.]+s: (\d+)$"
    worker = engine.worker(wait=False)
    engine.beat(wait=False)  # polls every 2 s
    inbox, mailbox = connect_support(admin, dovecot, smtp_server, mail_user)
    through(imap_proxy, mailbox)
    worker.wait_ready()
    wait_until(lambda: "1" in worker.matches(polls), 15, "a poll that syncs the mailbox")
    wait_until(
        lambda: Mailbox.objects.filter(pk=mailbox.pk, sync_state="idle").exists(), 15, "a sync"
    )

    dovecot.add_user(mail_user[0], "changed-by-the-owner")
    sync_mailbox.delay(str(mailbox.pk))
    wait_until(
        lambda: Mailbox.objects.filter(pk=mailbox.pk, sync_state="stopped").exists(),
        15,
        "the failed sync",
    )
    connections = imap_proxy.connections
    mailbox.refresh_from_db()
    assert (mailbox.status, mailbox.sync_state) == ("error", "stopped")
    assert mailbox.last_error.startswith("IMAP login failed")
    assert "authentication failed" in mailbox.last_error.lower()
    assert mailbox.sync_last_error == mailbox.last_error
    assert mailbox.pk not in mailboxes_due()
    # the task (ours, or a poll's that came first) returned instead of retrying
    failed = r"Task inboxes.tasks.sync_mailbox\[[^\]]+\] succeeded[^\n]*login failed"
    worker.wait_for_log(failed)

    # the next polls skip it: no further login attempt reaches the server
    done = len(worker.matches(polls))
    wait_until(lambda: len(worker.matches(polls)) >= done + 2, 10, "two more polls")
    assert worker.matches(polls)[-1] == "0"  # (the one before may have started earlier)
    assert imap_proxy.connections == connections
    assert worker.count(failed) == 1  # one failed login in all
    assert "Retry in" not in worker.log()
    mailbox.refresh_from_db()
    assert (mailbox.status, mailbox.sync_state) == ("error", "stopped")
