"""The mail engine end to end: a real Celery worker on Redis, the IDLE watcher,
Dovecot and aiosmtpd. Nothing is called in-process except the user's action."""

from __future__ import annotations

import email
import time
from email import policy

import pytest
from django.db import transaction

from conversations.handling import conversation_reply
from conversations.models import Conversation, ConversationMessage
from inboxes.models import Mailbox, OutboxItem
from tests.support.mail import connect_imap_mailbox, make_email, team_inbox

# tests.support.workers is a plugin (fixtures) and a helper module: have pytest rewrite
# its asserts although this module imports it before pytest_plugins is read.
pytest.register_assert_rewrite("tests.support.workers")
from tests.support.workers import (  # noqa: E402
    assert_stored_exactly_once,
    server_message_ids,
    wait_until,
)

pytest_plugins = ["tests.support.workers"]
pytestmark = pytest.mark.django_db(transaction=True)

SUPPORT = "support@acme.example.com"
# imaplib's debug line for the IDLE command, which the watcher logs at DEBUG.
IDLE_COMMAND = r"> b'\w+ IDLE'"
SYNC_TASK = "inboxes.tasks.sync_mailbox"


def header(raw: bytes, name: str) -> str:
    return str(email.message_from_bytes(raw, policy=policy.default)[name] or "")


def sync_tasks_settled(worker, at_least: int) -> bool:
    """At least ``at_least`` sync tasks arrived and every one that arrived finished."""
    received = worker.count(rf"Task {SYNC_TASK}\[[^\]]+\] received")
    finished = worker.count(rf"Task {SYNC_TASK}\[[^\]]+\] (succeeded|retry|raised)")
    return received >= at_least and finished >= received


def connect_support(admin, dovecot, smtp_server, mail_user):
    inbox = team_inbox(admin.account, from_name="Acme Support")
    mailbox = connect_imap_mailbox(
        actor=admin,
        dovecot=dovecot,
        smtp_server=smtp_server,
        user=mail_user,
        address=SUPPORT,
        inbox=inbox,
    )
    return inbox, mailbox


def start_worker_and_watcher(engine):
    """Both boot side by side; the watcher picks the mailbox up once it is connected."""
    worker = engine.worker(wait=False)
    watcher = engine.watcher()
    worker.wait_ready()
    return worker, watcher


def watching(worker, watcher, mailbox):
    """Return once the watcher IDLEs on the mailbox and every sync so far (the one
    connecting scheduled; the watcher's catch-up, queued before its IDLE when the
    INBOX had moved past the stored cursor) has finished: from now on only a push
    starts a sync (no beat runs)."""
    watcher.wait_for_log(IDLE_COMMAND, timeout=20)

    def settled() -> bool:
        return (
            sync_tasks_settled(worker, 1)
            and Mailbox.objects.filter(pk=mailbox.pk, sync_state="idle").exists()
        )

    wait_until(settled, 20, "the first sync (and the watcher's catch-up, if any)")
    time.sleep(0.5)  # a catch-up queued just before the IDLE reaches the worker
    wait_until(settled, 20, "the watcher's catch-up sync")


def test_mail_arrives_by_idle_the_reply_leaves_threaded_and_the_answer_joins_the_conversation(
    engine, admin, dovecot, smtp_server, mail_user
):
    worker, watcher = start_worker_and_watcher(engine)
    inbox, mailbox = connect_support(admin, dovecot, smtp_server, mail_user)
    watching(worker, watcher, mailbox)
    smtp_server.clear()

    # A customer writes: the IDLE push brings it in within seconds (no beat runs).
    first = make_email(subject="Broken widget", body="My widget is broken.\n")
    first_id = header(first, "Message-ID")
    started = time.monotonic()
    dovecot.deliver(mail_user[0], first)
    conversation = wait_until(
        lambda: Conversation.objects.filter(inbox=inbox).first(), 5, "the pushed message"
    )
    assert time.monotonic() - started < 5
    assert conversation.subject == "Broken widget"

    # An agent answers: the worker sends it from the team address, threaded.
    with transaction.atomic():
        reply = conversation_reply(actor=admin, conversation=conversation, text="On it!")
    [received] = smtp_server.wait_for_messages(1, timeout=10)
    assert header(received.data, "Message-ID") == reply.message_id
    assert header(received.data, "From") == f"Acme Support <{SUPPORT}>"
    assert header(received.data, "To") == "carol@customer.example.com"
    assert header(received.data, "In-Reply-To") == first_id
    assert first_id in header(received.data, "References").split()
    assert header(received.data, "Subject") == "Re: Broken widget"
    assert received.rcpt_tos == ("carol@customer.example.com",)
    item = wait_until(
        lambda: OutboxItem.objects.filter(message=reply, state="sent").first(), 10, "sent mark"
    )
    assert item.attempts == 1

    # The customer answers the reply: it joins the same conversation.
    answer = make_email(
        subject="Re: Broken widget",
        body="Thanks!\n",
        in_reply_to=reply.message_id,
        references=f"{first_id} {reply.message_id}",
    )
    dovecot.deliver(mail_user[0], answer)
    wait_until(
        lambda: ConversationMessage.objects.filter(
            inbox=inbox, message__message_id=header(answer, "Message-ID")
        ).exists(),
        5,
        "the customer's answer",
    )
    assert Conversation.objects.filter(inbox=inbox).count() == 1
    conversation.refresh_from_db()
    assert conversation.message_count == 3
    assert list(
        conversation.messages.order_by("created_at").values_list("message_id", flat=True)
    ) == [first_id, reply.message_id, header(answer, "Message-ID")]
    assert len(smtp_server.messages) == 1  # the reply left once


def test_a_hundred_messages_delivered_at_once_are_all_imported_once(
    engine, admin, dovecot, smtp_server, mail_user
):
    worker, watcher = start_worker_and_watcher(engine)
    inbox, mailbox = connect_support(admin, dovecot, smtp_server, mail_user)
    watching(worker, watcher, mailbox)

    for n in range(100):
        dovecot.deliver(mail_user[0], make_email(subject=f"Order {n}", body=f"Order {n}\n"))
    source = server_message_ids(dovecot, mail_user)
    assert len(source) == 100

    wait_until(
        lambda: ConversationMessage.objects.filter(inbox=inbox).count() >= 100,
        15,
        "100 messages in conversations",
    )
    wait_until(lambda: sync_tasks_settled(worker, 1), 10, "the syncs to finish")
    assert_stored_exactly_once(inbox, source)
    assert Conversation.objects.filter(inbox=inbox).count() == 100


def test_mail_pushed_while_another_sync_runs_still_comes_in_at_once(
    imap_proxy, engine, admin, dovecot, smtp_server, mail_user
):
    """The push comes while a sync holds the mailbox's lease (here: the first,
    slow one). That sync listed the folder before the mail arrived, and the
    pushed sync is refused by the lease; the mail must still come in within
    seconds, not only at the next poll (SYNC_POLL_SECONDS, 60 by default).
    (Fails while mailbox_sync drops a sync that finds the lease taken without
    telling the holder: the mail waits for the next poll or push.)"""
    for n in range(100):
        dovecot.deliver(mail_user[0], make_email(subject=f"Old {n}", body="x" * 3000))
    imap_proxy.rate = 60_000  # a slow link: the first sync takes about 5 s
    worker, watcher = start_worker_and_watcher(engine)
    with transaction.atomic():  # the first sync starts on commit
        inbox, mailbox = connect_support(admin, dovecot, smtp_server, mail_user)
        Mailbox.objects.filter(pk=mailbox.pk).update(imap_port=imap_proxy.port)
    watcher.wait_for_log(IDLE_COMMAND, timeout=20)
    wait_until(
        lambda: Mailbox.objects.filter(pk=mailbox.pk, sync_state="initial", sync_total=100),
        10,
        "the first sync to list the folder",
    )
    done = Mailbox.objects.values_list("sync_done", flat=True).get(pk=mailbox.pk)
    assert done < 100, "the first sync ended too soon for this test"

    fresh = make_email(subject="Urgent: site down")
    idles = watcher.count(IDLE_COMMAND)
    dovecot.deliver(mail_user[0], fresh)
    # the push came (the watcher started a sync and went back to IDLE)
    watcher.wait_for_log(IDLE_COMMAND, count=idles + 1, timeout=10)
    wait_until(
        lambda: Mailbox.objects.filter(pk=mailbox.pk, sync_state="idle").exists(),
        20,
        "the first sync to end",
    )
    wait_until(
        lambda: ConversationMessage.objects.filter(
            inbox=inbox, message__message_id=header(fresh, "Message-ID")
        ).exists(),
        5,
        "the mail pushed during the first sync",
    )
    assert_stored_exactly_once(inbox, server_message_ids(dovecot, mail_user))
    assert worker.alive()
