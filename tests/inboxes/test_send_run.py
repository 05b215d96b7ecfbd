"""The per-mailbox send run against real aiosmtpd and Dovecot: many items over one
connection, exactly once through refusals, drops, two runs at once and a worker
killed mid-run (real Celery worker), Sent copies for the whole run.

The SMTP server here is tests/support/mailservers.SMTPTestServer with a handler that
also records which connection each message came over (the client's address as
aiosmtpd saw it), refuses chosen recipients at RCPT, and can hang up at the
n-th MAIL FROM or hold / drop the n-th DATA.
"""

from __future__ import annotations

import email
import threading
import time
from collections import Counter
from email import policy

import pytest
from django.db import connection, transaction

from inboxes.models import Mailbox, Message, OutboxItem
from inboxes.outbox import (
    Recipient,
    claim_due,
    marks,
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
        refusal = self.owner.refuse.get(address)
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
        action = owner.at_data.get(nth)
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
@pytest.mark.parametrize("window", [1, 7])
def test_a_run_sends_every_due_item_over_one_connection_and_stores_the_sent_copies(
    support, run_smtp, dovecot, mail_user, monkeypatch, window
):
    monkeypatch.setattr(outbox_run, "SEND_WINDOW", window)
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
def test_with_a_wider_window_a_worker_death_leaves_the_window_unknown_and_resends_the_rest(
    support, run_smtp, monkeypatch
):
    """SEND_WINDOW 4: the "DATA started" marks go in blocks of two, committed one
    block ahead. The first commit marks the first four; right before the 3rd DATA
    the 5th and 6th are marked (with the same time), with the sent marks of the
    first two. The worker
    dies during the 3rd DATA: the first two stay sent; 3-6 (the window, four) end
    unknown, saying they may not have been reached (the 3rd was going out, 4-6
    never left); the two after them are sent again, once."""
    from inboxes.providers.imap.transport import SmtpTransport

    monkeypatch.setattr(outbox_run, "SEND_WINDOW", 4)
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
    monkeypatch.setattr(marks.Marks, "flush", lambda self: None)  # killed: no cleanup
    with pytest.raises(SystemExit):
        outbox_send_run(support.pk)
    monkeypatch.undo()
    rows = {r.pk: r for r in OutboxItem.objects.filter(pk__in=[i.pk for i in items])}
    assert [rows[i.pk].state for i in items] == ["sent"] * 2 + ["sending"] * 6
    # the marks committed ahead carry the time of the first ones
    assert len({rows[i.pk].data_started_at for i in items[:6]}) == 1
    assert [rows[i.pk].data_started_at for i in items[6:]] == [None, None]

    OutboxItem.objects.filter(pk__in=[i.pk for i in items]).update(
        claimed_at=rows[items[0].pk].claimed_at.replace(year=2020)
    )
    counts = outbox_sweep()
    assert (counts["unknown"], counts["recovered"]) == (4, 2)
    for item in items[2:6]:
        row = OutboxItem.objects.get(pk=item.pk)
        assert row.state == "unknown" and "may or may not have been reached" in row.detail
        assert NOT_RESENT in row.detail
    assert outbox_send_run(support.pk).sent == 2
    assert received_counts(run_smtp) == Counter(header_ids(items[:2] + items[6:]))


@pytest.mark.django_db(transaction=True)
def test_each_data_goes_out_after_its_mark_is_committed_and_never_more_than_the_window_are_open(
    support, run_smtp, monkeypatch
):
    """Seen from another connection (what a worker killed at that moment leaves):
    before each DATA the item's "DATA started" mark is committed, and never more
    than SEND_WINDOW items are marked started without a committed sent mark, also
    with the marks committed ahead and across chunks."""
    from django.db import connections

    from inboxes.providers.imap.transport import SmtpTransport

    monkeypatch.setattr(outbox_run, "CLAIM_CHUNK", 30)  # chunks and blocks need not align
    items = create_items(support, 75)
    message_pks = {item.message.message_id: item.message_id for item in items}
    observer = connections.create_connection("default")
    real_send = SmtpTransport.send
    open_counts = []

    def observed(self, raw, **kwargs):
        before_data = kwargs["before_data"]

        def check():
            before_data()
            with observer.cursor() as cursor:
                cursor.execute(
                    "SELECT message_id, data_started_at IS NOT NULL FROM inboxes_outboxitem"
                    " WHERE mailbox_id = %s AND state = 'sending'",
                    [support.pk],
                )
                rows = cursor.fetchall()
            going = [started for _, started in rows if started]
            open_counts.append(len(going))
            mark = (message_pks[message_id_of(raw)], True)
            assert mark in rows, "DATA before its mark was committed"

        kwargs["before_data"] = check
        return real_send(self, raw, **kwargs)

    monkeypatch.setattr(SmtpTransport, "send", observed)
    try:
        result = outbox_send_run(support.pk)
    finally:
        observer.close()

    assert result.sent == 75
    assert len(open_counts) == 75
    assert max(open_counts) == outbox_run.SEND_WINDOW
    assert received_counts(run_smtp) == Counter(header_ids(items))


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


# --- A worker killed in the middle of a run (real Celery worker) --------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_in_the_middle_of_a_run_never_sends_an_item_twice(
    engine, support, run_smtp
):
    """25 items, one run, the window is 20 (outbox_run.SEND_WINDOW: blocks of 10 marked
    one block ahead). Killed while the server holds the 23rd message's DATA reply:
    the first 20 were marked sent when the third block started and stay sent; the
    third block (21-25, marked when the second started) ends unknown, saying it
    may not have been reached (21 and 22 went out, 23 was going out, 24 and 25
    never left), and nothing is ever sent twice."""
    assert outbox_run.SEND_WINDOW == 20
    worker = engine.worker()
    run_smtp.at_data = {23: "hold"}
    with transaction.atomic():  # one commit: one run for the 25
        items = create_items(support, 25)
    run_smtp.wait_for_hold(1, timeout=30)

    def item_states() -> list[str]:
        rows = dict(
            OutboxItem.objects.filter(pk__in=[i.pk for i in items]).values_list("pk", "state")
        )
        return [rows[i.pk] for i in items]

    # The sent marks of 11-20 went with the statement sent ahead before the 21st
    # DATA; the worker does not wait for its commit while 21-23 go out.
    wait_until(
        lambda: item_states() == ["sent"] * 20 + ["sending"] * 5, 10, "the first 20 sent marks"
    )

    worker.kill_children()
    engine.beat()  # the sweeper, every 2 s; the send lease is 5 s
    window = [i.pk for i in items[20:]]
    wait_until(
        lambda: (
            OutboxItem.objects.filter(
                pk__in=window, state="unknown", detail__contains="may or may not have been reached"
            ).count()
            == 5
        ),
        40,
        "the sweeper to settle the second window",
    )
    time.sleep(4.5)  # two more sweeps and any redelivered run: nothing changes
    assert received_counts(run_smtp) == Counter(header_ids(items[:23]))
    states = dict(
        OutboxItem.objects.filter(pk__in=[i.pk for i in items]).values_list("pk", "state")
    )
    assert [states[i.pk] for i in items] == ["sent"] * 20 + ["unknown"] * 5
    assert all(
        NOT_RESENT in d
        for d in OutboxItem.objects.filter(pk__in=window).values_list("detail", flat=True)
    )
