"""The search column is filled after the commit (inboxes/search_index.py): in batches,
again when a row's searched fields change, by a worker the ingest wakes, and by
``manage.py index_messages`` with its progress. PostgreSQL only: SQLite has no column."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection

from conversations.selectors import conversation_list
from inboxes.models import Inbox, Mailbox, MailboxFolder, Message
from inboxes.providers.base import RawMessage
from inboxes.search_index import messages_index_pending, messages_unindexed
from inboxes.sync.ingest import ingest_batch
from tests.support.conversations_factory import make_conversation
from tests.support.mail import make_email

pytest.register_assert_rewrite("tests.support.workers")
from tests.support.workers import wait_until  # noqa: E402

pytest_plugins = ["tests.support.workers"]

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="the search column is PostgreSQL's; SQLite searches every row with a scan",
)

SUPPORT = "support@acme.example.com"


@pytest.fixture
def support(account):
    mailbox = Mailbox.objects.create(
        account=account,
        kind="team",
        address=SUPPORT,
        canonical_address=SUPPORT,
        imap_host="imap.acme.example.com",
        status="connected",
    )
    return Inbox.objects.create(
        account=account, name="Support", mailbox=mailbox, from_name="Acme Support"
    )


def vector(message: Message) -> str | None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT search_vector::text FROM conversations_message WHERE id = %s", [message.pk]
        )
        return cursor.fetchone()[0]


def ingest(support: Inbox, n: int, start: int = 0) -> None:
    folder, _ = MailboxFolder.objects.get_or_create(
        mailbox=support.mailbox, role="inbox", defaults={"name": "INBOX"}
    )
    raws = [
        RawMessage(
            key=f"1:{k}",
            raw=make_email(sender=f"c{k}@customer.example", to=SUPPORT, body=f"Part widget{k}.\n"),
        )
        for k in range(start, start + n)
    ]
    ingest_batch(mailbox=support.mailbox, folder=folder, raws=raws, cursor={}, backfill=False)


@pytest.mark.django_db
def test_stored_messages_wait_then_are_indexed_in_batches(support):
    for k in range(5):
        make_conversation(support, subject=f"Kettle {k}", text="The kettle leaks.")
    assert messages_unindexed() == 5
    assert messages_index_pending(seconds=0, batch=2) == (2, True)  # one batch, then time's up
    assert messages_unindexed() == 3
    assert messages_index_pending(batch=2) == (3, False)
    assert messages_unindexed() == 0
    message = Message.objects.first()
    assert "'kettl'" in vector(message) and "'kettle'" in vector(message)  # stem and word


@pytest.mark.django_db
def test_a_changed_text_is_indexed_again_and_other_updates_keep_the_vector(member, support):
    conversation = make_conversation(support, subject="Lamp", text="The lamp flickers.")
    messages_index_pending()
    message = Message.objects.get()
    before = vector(message)
    Message.objects.filter(pk=message.pk).update(has_remote_images=True)
    assert vector(message) == before  # not a searched field
    message.save()  # every field written, none changed
    assert vector(message) == before

    Message.objects.filter(pk=message.pk).update(text="The bulb is dead.")
    assert vector(message) is None
    assert conversation_list(member, search="bulb").get() == conversation  # meanwhile: a scan
    assert conversation_list(member, search="flickers").count() == 0
    messages_index_pending()
    assert "'bulb'" in vector(message)
    assert conversation_list(member, search="bulb").get() == conversation


@pytest.mark.django_db
def test_the_command_indexes_the_backlog_and_shows_its_progress(support):
    for k in range(3):
        make_conversation(support, subject=f"Parcel {k}", text="Where is it?")
    out = StringIO()
    call_command("index_messages", stdout=out)
    assert "indexed 3 of 3 messages" in out.getvalue()
    assert out.getvalue().strip().endswith("done: 0 left")
    assert messages_unindexed() == 0


@pytest.mark.django_db(transaction=True)
def test_a_worker_indexes_what_the_ingest_stored_and_goes_on_with_a_backlog(
    engine, member, support
):
    # A run of 0 seconds does one batch of 500 and queues the next run: 1,001 rows
    # stored take three runs, queued by the ingest's commit and then by each run.
    ingest(support, 1_000)
    assert messages_unindexed() == 1_000
    worker = engine.worker(env={"SEARCH_INDEX_RUN_SECONDS": "0"})
    ingest(support, 1, start=1_000)  # its commit wakes the indexing
    wait_until(lambda: messages_unindexed() == 0, 60, "every message indexed")
    # (each run logs its success after its commit: the log may trail the rows)
    wait_until(
        lambda: worker.tasks_succeeded("inboxes.tasks.index_messages") >= 3, 10, "three runs"
    )
    assert conversation_list(member, search="widget999").count() == 1
