"""The per-mailbox send run against real aiosmtpd and Dovecot: many items over one
connection, exactly once through refusals, drops, two runs at once and a worker
killed mid-run (real Celery worker), Sent copies for the whole run.

The SMTP server here is tests/support/mailservers.SMTPTestServer with a handler that
also records which connection each message came over (the client's address as
aiosmtpd saw it), refuses chosen recipients at RCPT, can hang up at the n-th MAIL
FROM, hold / drop the n-th DATA, and hold the reply to RCPT TO or DATA of a
message for a chosen recipient.
"""

from __future__ import annotations

import email
import threading
import time
import uuid
from collections import Counter
from email import policy

import pytest
from django.db import connection, transaction

from inboxes.models import Mailbox, Message, OutboxItem
from inboxes.outbox import (
    Recipient,
    claim_due,
    outbox_create,
    outbox_send_run,
    outbox_sweep,
    run_lease_hold,
    run_lease_release,
    run_requests_answered,
    sweep,
)
from inboxes.outbox import run as outbox_run
from inboxes.outbox.outcomes import backoff
from tests.support.mail import connect_imap_mailbox, team_inbox
from tests.support.mailservers import SMTPTestServer, _Handler

# tests.support.workers is a plugin (fixtures) and a helper module: have pytest rewrite
# its asserts although this module imports it before pytest_plugins is read.
pytest.register_assert_rewrite("tests.support.workers")
from tests.support.workers import (  # noqa: E402
    imap_client,
    purge_queues,
    queued_count,
    server_message_ids,
    wait_until,
)

pytest_plugins = ["tests.support.workers"]

SUPPORT = "support@acme.example.com"
NOT_RESENT = "It was not sent again automatically"


# --- An SMTP server that tells connections apart --------------------------------------------------


class _RunHandler(_Handler):
    async def handle_MAIL(self, server, session, envelope, address, options):  # noqa: N802
        owner = self.owner
        with owner._lock:
            owner.mails += 1
            drop = owner.mails in owner.drop_at_mail
        if drop:
            await owner._drop(server)
            return "421 4.4.2 Closing"
        if owner.mail_delay:
            await _sleep(owner.mail_delay)
        return await super().handle_MAIL(server, session, envelope, address, options)

    async def handle_RCPT(self, server, session, envelope, address, options):  # noqa: N802
        owner = self.owner
        with owner._lock:
            hold = address in owner.hold_rcpt
            owner.hold_rcpt.discard(address)
        if hold:
            await owner._hold(server, 60)
        refusal = owner.refuse.get(address)
        if refusal:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        owner = self.owner
        with owner._lock:
            owner.datas += 1
            nth = owner.datas
            owner.data_peers.append(session.peer)
            held = owner.hold_data_to & set(envelope.rcpt_tos)
            owner.hold_data_to -= held
        action = "hold" if held else owner.at_data.get(nth)
        if action == "hold":
            owner.hold_data_reply(60)
        elif action == "drop":
            owner.drop_after_data()
        return await super().handle_DATA(server, session, envelope)


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


class RunSMTPServer(SMTPTestServer):
    def __init__(self, mail_ca) -> None:
        super().__init__(mail_ca)
        handler = _RunHandler(self)
        for controller in self._controllers:
            controller.handler = handler
        self.reset_counters()

    def reset_counters(self) -> None:
        self.clear()
        self.mails = 0
        self.datas = 0
        self.data_peers: list = []
        self.refuse: dict[str, str] = {}
        self.drop_at_mail: set[int] = set()
        self.at_data: dict[int, str] = {}
        self.hold_rcpt: set[str] = set()  # hold the reply to RCPT TO of these
        self.hold_data_to: set[str] = set()  # hold the DATA reply of a message to these
        self.mail_delay = 0.0

    def connections_used(self) -> int:
        """How many connections carried message data."""
        with self._lock:
            return len(set(self.data_peers))


@pytest.fixture(scope="module")
def run_smtp(mail_ca, _mail_tls_settings):
    server = RunSMTPServer(mail_ca)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def support(admin, dovecot, run_smtp, mail_user):
    run_smtp.add_user(*mail_user)
    inbox = team_inbox(admin.account, from_name="Acme Support")
    mailbox = connect_imap_mailbox(
        actor=admin,
        dovecot=dovecot,
        smtp_server=run_smtp,
        user=mail_user,
        address=SUPPORT,
        inbox=inbox,
    )
    run_smtp.reset_counters()
    return mailbox


def create_items(mailbox, count: int, *, to=None, prefix: str = "Order") -> list[OutboxItem]:
    items = []
    for n in range(count):
        with transaction.atomic():
            items.append(
                outbox_create(
                    mailbox=mailbox,
                    from_name="Acme Support",
                    to=(to or {}).get(n) or [Recipient(f"customer{n}@customer.example.com")],
                    subject=f"{prefix} {n}",
                    text=f"Your order {n} left today.",
                )
            )
    return items


def message_id_of(raw: bytes) -> str:
    return str(email.message_from_bytes(raw, policy=policy.default)["Message-ID"])


def received_counts(server) -> Counter:
    return Counter(message_id_of(m.data) for m in server.messages)


def header_ids(items) -> list[str]:
    return [item.message.message_id for item in items]


def states(items) -> dict[str, str]:
    return dict(
        OutboxItem.objects.filter(pk__in=[i.pk for i in items]).values_list(
            "message__subject", "state"
        )
    )


# --- One connection, Sent copies ---------------------------------------------------------------------


@pytest.mark.django_db
def test_a_run_sends_every_due_item_over_one_connection_and_stores_the_sent_copies(
    support, run_smtp, dovecot, mail_user
):
    items = create_items(support, 30)

    result = outbox_send_run(support.pk)

    assert (result.claimed, result.sent, result.connections) == (30, 30, 1)
    assert run_smtp.connections_used() == 1
    assert received_counts(run_smtp) == Counter(header_ids(items))
    assert set(states(items).values()) == {"sent"}
    assert OutboxItem.objects.filter(sent_copy_stored=True).count() == 30
    assert Counter(server_message_ids(dovecot, mail_user, "Sent")) == Counter(header_ids(items))
    with imap_client(dovecot, mail_user) as client:
        client.select_folder("Sent", readonly=True)
        flags = client.get_flags(client.search("ALL"))
    assert all(b"\\Seen" in f for f in flags.values())
    # the same order as created, and nothing left to send
    assert [message_id_of(m.data) for m in run_smtp.messages] == header_ids(items)
    assert outbox_send_run(support.pk).claimed == 0
    assert len(run_smtp.messages) == 30


@pytest.mark.django_db
def test_a_long_run_renews_its_connection_every_few_messages(support, run_smtp, monkeypatch):
    monkeypatch.setattr(outbox_run, "RECONNECT_EVERY", 10)
    monkeypatch.setattr(outbox_run, "CLAIM_CHUNK", 7)  # chunks and connections need not align
    items = create_items(support, 25)

    result = outbox_send_run(support.pk)

    assert (result.sent, result.connections) == (25, 3)
    assert run_smtp.connections_used() == 3
    assert received_counts(run_smtp) == Counter(header_ids(items))


@pytest.mark.django_db
def test_sent_copies_the_imap_server_refuses_are_left_for_the_sweeper(
    support, run_smtp, monkeypatch
):
    """A tagged NO to the MULTIAPPEND (here: no such folder) stores nothing: the
    items are sent, their copies not marked stored (the sweeper tries again)."""
    from inboxes.providers.imap.session import ImapSession

    monkeypatch.setattr(ImapSession, "sent_folder_name", lambda self: "No such folder")
    items = create_items(support, 3)

    result = outbox_send_run(support.pk)

    assert (result.sent, result.copies) == (3, 0)
    assert set(states(items).values()) == {"sent"}
    assert OutboxItem.objects.filter(sent_copy_stored=True).count() == 0


# --- Refusals and drops in the middle of a run -------------------------------------------------------


@pytest.mark.django_db
def test_a_refused_recipient_in_the_middle_does_not_stop_the_others(support, run_smtp):
    refused = "nobody@customer.example.com"
    run_smtp.refuse[refused] = "550 5.1.1 No such user"
    run_smtp.refuse["busy@customer.example.com"] = "451 4.3.0 Mailbox busy, try later"
    to = {
        3: [Recipient(refused)],  # the only recipient: fails for good
        5: [Recipient("busy@customer.example.com")],  # 4xx: later
        7: [Recipient("dan@customer.example.com"), Recipient(refused)],  # one of two
    }
    items = create_items(support, 10, to=to)

    result = outbox_send_run(support.pk)

    assert (result.sent, result.failed, result.retrying) == (8, 1, 1)
    assert result.retry_in == backoff(1)  # the task runs again then
    assert run_smtp.connections_used() == 1  # RSET, not a new connection
    got = received_counts(run_smtp)
    ids = header_ids(items)
    assert got == Counter(ids[:3] + ids[4:5] + ids[6:])
    failed, later, partly = (OutboxItem.objects.get(pk=items[n].pk) for n in (3, 5, 7))
    assert failed.state == "failed" and "550 5.1.1 No such user" in failed.detail
    assert later.state == "queued" and later.next_attempt_at and "451" in later.detail
    assert partly.state == "sent" and f"refused: {refused}: 550" in partly.detail
    [copy] = [m for m in run_smtp.messages if message_id_of(m.data) == ids[7]]
    assert copy.rcpt_tos == ("dan@customer.example.com",)

    # when it is due, the next run sends it, once
    OutboxItem.objects.filter(pk=later.pk).update(next_attempt_at=None)
    run_smtp.refuse.clear()
    assert outbox_send_run(support.pk).sent == 1
    assert received_counts(run_smtp)[ids[5]] == 1
    assert OutboxItem.objects.get(pk=later.pk).attempts == 2


@pytest.mark.django_db
def test_a_connection_dropped_before_data_is_reopened_and_nothing_is_lost(support, run_smtp):
    items = create_items(support, 8)
    run_smtp.drop_at_mail = {4}  # the server hangs up at the 4th MAIL FROM

    result = outbox_send_run(support.pk)

    assert (result.sent, result.connections) == (8, 2)
    assert run_smtp.connections_used() == 2
    assert received_counts(run_smtp) == Counter(header_ids(items))
    assert set(states(items).values()) == {"sent"}
    assert {i.attempts for i in OutboxItem.objects.filter(pk__in=[i.pk for i in items])} == {1}


@pytest.mark.django_db
def test_a_drop_after_data_leaves_that_item_unknown_and_the_run_goes_on(
    support, run_smtp, dovecot, mail_user
):
    items = create_items(support, 6)
    run_smtp.at_data = {3: "drop"}

    result = outbox_send_run(support.pk)

    assert (result.sent, result.unknown, result.connections) == (5, 1, 2)
    third = OutboxItem.objects.get(pk=items[2].pk)
    assert third.state == "unknown" and NOT_RESENT in third.detail
    # each went out once, the third included (the server had it when it hung up)
    assert received_counts(run_smtp) == Counter(header_ids(items))
    # never resent, by this run or the next
    assert outbox_send_run(support.pk).claimed == 0
    assert len(run_smtp.messages) == 6
    # only the five confirmed ones got a Sent copy
    assert Counter(server_message_ids(dovecot, mail_user, "Sent")) == Counter(
        [i for n, i in enumerate(header_ids(items)) if n != 2]
    )


@pytest.mark.django_db
def test_a_server_that_cannot_be_reached_puts_the_chunk_back_for_later(support, run_smtp):
    items = create_items(support, 4)
    Mailbox.objects.filter(pk=support.pk).update(smtp_port=1)  # nothing listens there

    result = outbox_send_run(support.pk)

    assert (result.sent, result.retrying, result.connections) == (0, 4, 0)
    assert result.retry_in == backoff(1)
    assert set(states(items).values()) == {"queued"}
    assert run_smtp.messages == []


@pytest.mark.django_db
def test_a_worker_death_leaves_at_most_the_item_going_out_unknown_and_resends_the_rest(
    support, run_smtp, monkeypatch
):
    """The worker dies during the 3rd DATA: the first two stay sent (each sent mark
    is committed before the next item's DATA), the 3rd ends unknown (its own mark
    was committed right before its DATA), and the five after it, never reached and
    never marked, are sent again, once."""
    from inboxes.providers.imap.transport import SmtpTransport

    items = create_items(support, 8)
    real_send = SmtpTransport.send
    calls = []

    def dies_in_the_third_data(self, raw, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            kwargs["before_data"]()
            raise SystemExit("worker killed")
        return real_send(self, raw, **kwargs)

    monkeypatch.setattr(SmtpTransport, "send", dies_in_the_third_data)
    with pytest.raises(SystemExit):
        outbox_send_run(support.pk)
    monkeypatch.undo()
    rows = {r.pk: r for r in OutboxItem.objects.filter(pk__in=[i.pk for i in items])}
    assert [rows[i.pk].state for i in items] == ["sent"] * 2 + ["sending"] * 6
    assert [rows[i.pk].data_started_at is not None for i in items] == [True] * 3 + [False] * 5

    OutboxItem.objects.filter(pk__in=[i.pk for i in items]).update(
        claimed_at=rows[items[0].pk].claimed_at.replace(year=2020)
    )
    counts = outbox_sweep()
    assert (counts["unknown"], counts["recovered"]) == (1, 5)
    third = OutboxItem.objects.get(pk=items[2].pk)
    assert third.state == "unknown" and NOT_RESENT in third.detail
    assert "the worker stopped while the message was going out" in third.detail
    assert outbox_send_run(support.pk).sent == 5
    assert received_counts(run_smtp) == Counter(header_ids(items[:2] + items[3:]))


@pytest.mark.django_db
def test_after_a_database_crash_every_item_its_run_had_claimed_counts_as_possibly_started(
    support, run_smtp, monkeypatch
):
    """The run's marks are committed without a flush: a database crash may lose the
    last ones, and an item that went out would then look never tried. Its claim
    recorded the database's epoch; the crash ends that epoch (PostgreSQL: crash
    recovery empties the unlogged epoch table; SQLite: the machine boots again),
    and the sweeper counts every item still sending from that claim as possibly
    started: unknown, never resent."""
    from inboxes.outbox import epoch
    from inboxes.providers.imap.transport import SmtpTransport

    items = create_items(support, 6)
    real_send = SmtpTransport.send

    def dies_at_the_fourth(self, raw, **kwargs):
        if len(run_smtp.messages) == 3:
            raise SystemExit("the database server went down with the worker")
        return real_send(self, raw, **kwargs)

    monkeypatch.setattr(SmtpTransport, "send", dies_at_the_fourth)
    with pytest.raises(SystemExit):
        outbox_send_run(support.pk)
    monkeypatch.undo()
    claimed = OutboxItem.objects.filter(pk__in=[i.pk for i in items])
    assert {row.marks_epoch for row in claimed} == {epoch.current_epoch()}
    # As if the last commits were lost: items 3-6 still sending, none marked started.
    OutboxItem.objects.filter(pk__in=[i.pk for i in items[2:]]).update(data_started_at=None)
    OutboxItem.objects.filter(pk__in=[i.pk for i in items[2:]]).update(state="sending")
    claimed.update(claimed_at=claimed[0].claimed_at.replace(year=2020))

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT relpersistence FROM pg_class WHERE relname = %s", [epoch.EPOCH_TABLE]
            )
            assert cursor.fetchone() == ("u",)  # unlogged: emptied by crash recovery
            cursor.execute(f"DELETE FROM {epoch.EPOCH_TABLE}")  # noqa: S608 - a constant
    else:
        monkeypatch.setattr(epoch, "_boot_epoch", lambda: "boot:after-a-reboot")
    assert epoch.current_epoch() != claimed[0].marks_epoch

    counts = outbox_sweep()
    assert (counts["unknown"], counts["recovered"]) == (4, 0)
    for item in items[2:]:
        row = OutboxItem.objects.get(pk=item.pk)
        assert row.state == "unknown" and NOT_RESENT in row.detail
        assert "may or may not have been reached" in row.detail
    assert outbox_send_run(support.pk).claimed == 0
    assert received_counts(run_smtp) == Counter(header_ids(items[:3]))
    # The claims of the new epoch are judged by their marks again.
    more = create_items(support, 2, prefix="After")
    assert outbox_send_run(support.pk).sent == 2
    assert {row.marks_epoch for row in OutboxItem.objects.filter(pk__in=[i.pk for i in more])} == {
        epoch.current_epoch()
    }


@pytest.mark.django_db(transaction=True)
def test_each_data_goes_out_after_its_own_mark_is_committed_and_only_that_item_is_open(
    support, run_smtp, monkeypatch
):
    """Seen from another connection (what a worker killed at that moment leaves):
    before each DATA the item's "DATA started" mark is committed, and every item
    before it has its sent mark committed: one item open, also across chunks."""
    from django.db import connections

    from inboxes.providers.imap.transport import SmtpTransport

    monkeypatch.setattr(outbox_run, "CLAIM_CHUNK", 30)
    items = create_items(support, 75)
    message_pks = {item.message.message_id: item.message_id for item in items}
    observer = connections.create_connection("default")
    real_send = SmtpTransport.send
    open_items = []

    def observed(self, raw, **kwargs):
        before_data = kwargs["before_data"]

        def check():
            before_data()
            with observer.cursor() as cursor:
                cursor.execute(
                    "SELECT message_id FROM inboxes_outboxitem WHERE mailbox_id = %s"
                    " AND state = 'sending' AND data_started_at IS NOT NULL",
                    [support.pk.hex if connection.vendor == "sqlite" else support.pk],
                )
                open_items.append([uuid.UUID(str(row[0])) for row in cursor.fetchall()])
            assert open_items[-1] == [message_pks[message_id_of(raw)]], (
                "DATA before its mark was committed, or an earlier item still open"
            )

        kwargs["before_data"] = check
        return real_send(self, raw, **kwargs)

    monkeypatch.setattr(SmtpTransport, "send", observed)
    try:
        result = outbox_send_run(support.pk)
    finally:
        observer.close()

    assert result.sent == 75
    assert len(open_items) == 75
    assert received_counts(run_smtp) == Counter(header_ids(items))
    if connection.vendor == "postgresql":
        # Only the marks' own transactions commit without a flush.
        with connection.cursor() as cursor:
            cursor.execute("SHOW synchronous_commit")
            assert cursor.fetchone() == ("on",)


@pytest.mark.django_db(transaction=True)
def test_the_marks_statement_is_prepared_again_when_it_was_deallocated(support, run_smtp):
    """psycopg clears the server's prepared statements (DEALLOCATE ALL) after a
    rollback once it has prepared some of its own: the run prepares its marks
    statement again and goes on."""
    if connection.vendor != "postgresql":
        pytest.skip("a PostgreSQL prepared statement")
    create_items(support, 2)
    assert outbox_send_run(support.pk).sent == 2
    with connection.cursor() as cursor:
        cursor.execute("DEALLOCATE ALL")
    items = create_items(support, 3, prefix="Again")
    assert outbox_send_run(support.pk).sent == 3
    assert set(states(items).values()) == {"sent"}


# --- Two runs at once -----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_two_runs_of_one_mailbox_never_send_an_item_twice(support, run_smtp, monkeypatch):
    monkeypatch.setattr(outbox_run, "CLAIM_CHUNK", 5)
    run_smtp.mail_delay = 0.01  # both runs are sending at the same time
    items = create_items(support, 60)
    barrier = threading.Barrier(2)
    results: list = []

    def run() -> None:
        try:
            barrier.wait(timeout=10)
            results.append(outbox_send_run(support.pk))
        except Exception as exc:  # reported below
            results.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(isinstance(r, Exception) for r in results), results
    assert sorted(r.sent for r in results)[0] > 0, "the runs did not overlap"
    assert sum(r.sent for r in results) == 60
    assert received_counts(run_smtp) == Counter(header_ids(items))
    assert set(states(items).values()) == {"sent"}


# --- Asking for runs ----------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_burst_of_replies_publishes_one_run_and_a_request_during_a_run_is_not_lost(
    support, run_smtp, settings
):
    url = settings.CELERY_BROKER_URL
    if not url.startswith("redis://"):
        pytest.skip("needs a Redis broker")
    purge_queues(url)
    create_items(support, 5)
    assert queued_count(url, "send") == 1  # one run for the five

    # The run starts: later replies are its business until it lets go ...
    run_lease_hold(support.pk)
    run_requests_answered(support.pk)
    assert claim_due(support.pk, 100) != []
    late = create_items(support, 1, prefix="Late")
    assert queued_count(url, "send") == 1  # refused: the lease is held
    # ... and on letting go it sees the request and runs on.
    assert run_lease_release(support.pk) is True
    run_requests_answered(support.pk)
    assert [c.pk for c in claim_due(support.pk, 100)] == [late[0].pk]
    assert run_lease_release(support.pk) is False
    create_items(support, 1, prefix="Next")
    assert queued_count(url, "send") == 2  # the lease is free: published
    purge_queues(url)


@pytest.mark.django_db
def test_the_sweeper_publishes_one_run_per_mailbox_for_items_whose_run_was_lost(
    support, run_smtp, settings
):
    items = create_items(support, 3)
    # as if the broker lost the run: nothing was claimed, the items are older than 5 s
    OutboxItem.objects.filter(pk__in=[i.pk for i in items]).update(
        created_at=Message.objects.first().created_at.replace(year=2020)
    )
    published: list = []
    original = sweep.enqueue_send_run

    def record(mailbox_id, **kwargs):
        published.append((str(mailbox_id), kwargs))
        return original(mailbox_id, **kwargs)

    sweep.enqueue_send_run = record
    try:
        counts = outbox_sweep()
    finally:
        sweep.enqueue_send_run = original
    assert (counts["requeued"], counts["runs"]) == (3, 1)
    assert published == [(str(support.pk), {"force": True})]


@pytest.mark.django_db
def test_a_run_hands_over_to_a_new_one_after_its_time_is_up(support, run_smtp, monkeypatch):
    monkeypatch.setattr(outbox_run, "CLAIM_CHUNK", 2)
    monkeypatch.setattr(outbox_run, "RUN_MAX_SECONDS", 0.2)
    run_smtp.mail_delay = 0.05
    asked: list = []
    monkeypatch.setattr(outbox_run, "enqueue_send_run", lambda m, **kw: asked.append((m, kw)))
    create_items(support, 12)

    started = time.monotonic()
    result = outbox_send_run(support.pk)

    assert time.monotonic() - started < 3
    assert 0 < result.sent < 12
    assert asked == [(support.pk, {"force": True})]
    assert OutboxItem.objects.filter(state="queued").count() == 12 - result.sent
    assert OutboxItem.objects.filter(state="sending").count() == 0


# --- A worker killed at each point of a run (real Celery worker) --------------------------------------


def customer(number: int) -> str:
    """The recipient of item ``number`` (1-based) of ``create_items``."""
    return f"customer{number - 1}@customer.example.com"


class RowLock:
    """Another database connection holding item ``pk``'s row (PostgreSQL) or the
    database's write lock (SQLite): the worker's next write to it waits."""

    def __init__(self, pk) -> None:
        self.postgresql = connection.vendor == "postgresql"
        if self.postgresql:
            import psycopg

            from tests.support.workers import subprocess_database_url

            self.conn = psycopg.connect(subprocess_database_url())
            self.conn.execute("SELECT 1 FROM inboxes_outboxitem WHERE id = %s FOR UPDATE", [pk])
        else:
            import sqlite3

            self.conn = sqlite3.connect(connection.settings_dict["NAME"], isolation_level=None)
            self.conn.execute("BEGIN IMMEDIATE")

    def wait_for_a_waiting_write(self) -> None:
        if self.postgresql:
            wait_until(lambda: self._waiting(), 10, "the worker's write to wait for the lock")
        else:
            time.sleep(0.5)  # SQLite's busy handler cannot be seen from outside

    def _waiting(self) -> list:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock'"
            )
            return cursor.fetchall()

    def end_waiting_writes(self) -> None:
        """PostgreSQL: end the dead worker's statement as if it had never left it
        (else its backend carries it out once the lock goes)."""
        if self.postgresql:
            for (pid,) in self._waiting():
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_terminate_backend(%s)", [pid])

    def release(self) -> None:
        self.conn.rollback() if self.postgresql else self.conn.execute("ROLLBACK")
        self.conn.close()
        if self.postgresql:
            wait_until(lambda: not self._waiting(), 10, "the dead worker's statement to end")


# (item number, where the worker is killed): while the server holds the reply to
# its DATA ("data": its data went out) or to its RCPT TO ("rcpt": before DATA, the
# item before it answered 250); once its DATA was answered but before the 250 was
# written ("reply": the write waits for a lock); while its "DATA started" mark
# waits for a lock ("mark").
KILL_POINTS = [
    (1, "data"),
    (2, "data"),
    (3, "rcpt"),
    (10, "data"),
    (20, "reply"),
    (37, "data"),
    (50, "rcpt"),
    (60, "mark"),
    (75, "reply"),
    (99, "data"),
    (100, "rcpt"),
]


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_at_any_point_of_a_run_leaves_at_most_one_item_unknown(
    engine, support, run_smtp, settings
):
    """100 items, one run; the worker's pool child is SIGKILLed at each of
    KILL_POINTS in turn, each time followed by a sweep (which queues again what
    certainly did not go out and publishes a run; the redelivered run and the new
    one go on). Each kill leaves at most one item unknown: the one whose data was
    going out or whose 250 was not recorded yet ("data", "reply"); before an
    item's DATA ("rcpt") the item before it if the run had sent it (its 250 is
    recorded with the next item's mark), else none; while an item's mark is
    being written ("mark"), that item if the dead worker's statement still
    commits once the lock goes (PostgreSQL) or the item before it if it never
    does (SQLite). In the end every other item is sent, and no message reached
    the server twice."""
    settings.OUTBOX_SEND_LEASE_SECONDS = 0  # this process's sweeps: every sending item is stale
    worker = engine.worker(concurrency=1)  # one run at a time

    def arm(number: int, kind: str) -> None:
        (run_smtp.hold_data_to if kind in ("data", "reply") else run_smtp.hold_rcpt).add(
            customer(number)
        )

    arm(*KILL_POINTS[0])
    with transaction.atomic():  # one commit: one run for the 100
        items = create_items(support, 100)
    ids = [i.pk for i in items]
    unknown: set = set()
    for index, (number, kind) in enumerate(KILL_POINTS):
        item = items[number - 1]
        run_smtp.wait_for_hold(index + 1, timeout=30)
        before = items[number - 2].pk if number > 1 else None
        # sent by this run, its 250 not recorded yet
        before_open = before is not None and (OutboxItem.objects.get(pk=before).state == "sending")
        if kind in ("data", "rcpt"):
            worker.kill_children()
        else:
            lock = RowLock(item.pk)
            try:
                run_smtp.release_holds()
                lock.wait_for_a_waiting_write()
                worker.kill_children()
                if kind == "reply":
                    lock.end_waiting_writes()
            finally:
                lock.release()
        if index + 1 < len(KILL_POINTS):
            arm(*KILL_POINTS[index + 1])  # before the sweep publishes the next run
        outbox_sweep()
        now_unknown = set(
            OutboxItem.objects.filter(pk__in=ids, state="unknown").values_list("pk", flat=True)
        )
        new, unknown = now_unknown - unknown, now_unknown
        what = f"killed at item {number} ({kind}): {len(new)} new unknown"
        if kind in ("data", "reply"):
            assert new == {item.pk}, what
        elif kind == "rcpt":
            assert new == ({before} if before_open else set()), what
        else:
            assert len(new) == 1 and new <= {before, item.pk}, what
        assert max(received_counts(run_smtp).values()) == 1, what

    wait_until(
        lambda: not OutboxItem.objects.filter(pk__in=ids, state__in=["queued", "sending"]).exists(),
        30,
        "every item to be settled after the last kill",
    )
    states = dict(OutboxItem.objects.filter(pk__in=ids).values_list("pk", "state"))
    assert {pk for pk, state in states.items() if state == "unknown"} == unknown
    assert {state for pk, state in states.items() if pk not in unknown} == {"sent"}
    assert len(unknown) <= len(KILL_POINTS)
    # nothing reached the server twice, every sent item once, nothing else but unknown ones
    received = received_counts(run_smtp)
    assert set(received.values()) == {1}
    message_ids = {i.pk: i.message.message_id for i in items}
    assert {message_ids[pk] for pk in ids if states[pk] == "sent"} <= set(received)
    assert set(received) <= {message_ids[pk] for pk in ids}
    assert all(
        NOT_RESENT in d
        for d in OutboxItem.objects.filter(pk__in=unknown).values_list("detail", flat=True)
    )
