"""Send limits of personal mailboxes (inboxes/outbox/limits.py): the outbox never
sends over a mailbox's per-minute or per-day limit; what does not fit waits, queued
with ``held_until``, and goes by itself (a run asked for that moment), exactly once.

Against aiosmtpd and Dovecot; the "goes by itself" tests against a real Celery
worker with short windows (``SEND_LIMIT_MINUTE_SECONDS`` / ``_DAY_SECONDS``), and no
beat: the run that sends the held mail is the one the holding run asked for.
"""

from __future__ import annotations

import email
import threading
from collections import Counter
from datetime import timedelta
from email import policy

import pytest
from django.db import connection, transaction
from django.utils import timezone

from audit.models import AuditEvent
from inboxes.delivery import delivery_of
from inboxes.models import Mailbox, Message, OutboxItem, OutboxState, Provider
from inboxes.outbox import Recipient, outbox_create, outbox_send_run
from inboxes.outbox.limits import SendLimits, limits_of, schedule
from tests.support.mail import connect_imap_mailbox, team_inbox

pytest.register_assert_rewrite("tests.support.workers")
from tests.support.workers import wait_until  # noqa: E402

pytest_plugins = ["tests.support.workers"]

REP = "bo.rep@acme.example.com"


@pytest.fixture
def rep_mailbox(member, dovecot, smtp_server, mail_user) -> Mailbox:
    """Bo's personal email on Dovecot and aiosmtpd."""
    mailbox = connect_imap_mailbox(
        actor=member,
        dovecot=dovecot,
        smtp_server=smtp_server,
        user=mail_user,
        address=REP,
        kind="personal",
    )
    smtp_server.clear()
    return mailbox


@pytest.fixture
def team_mailbox(admin, dovecot, smtp_server, mail_user) -> Mailbox:
    mailbox = connect_imap_mailbox(
        actor=admin,
        dovecot=dovecot,
        smtp_server=smtp_server,
        user=mail_user,
        address="support@acme.example.com",
        inbox=team_inbox(admin.account),
    )
    smtp_server.clear()
    return mailbox


def set_limits(mailbox: Mailbox, *, per_day: int | None = None, per_minute: int | None = None):
    Mailbox.objects.filter(pk=mailbox.pk).update(
        send_limit_per_day=per_day, send_limit_per_minute=per_minute
    )
    mailbox.refresh_from_db()


def queue(mailbox: Mailbox, count: int) -> list[OutboxItem]:
    items = []
    for n in range(count):
        with transaction.atomic():
            items.append(
                outbox_create(
                    mailbox=mailbox,
                    from_name="Bo Lee",
                    to=[Recipient(f"lead{n}@prospect.example.com")],
                    subject=f"Hello {n}",
                    text=f"Hi lead {n}.",
                )
            )
    return items


def fresh(items: list[OutboxItem]) -> list[OutboxItem]:
    by_pk = OutboxItem.objects.in_bulk([i.pk for i in items])
    return [by_pk[i.pk] for i in items]


def received(server) -> Counter:
    return Counter(
        str(email.message_from_bytes(m.data, policy=policy.default)["Message-ID"])
        for m in server.messages
    )


def assert_each_sent_once(items: list[OutboxItem], server) -> None:
    counts = received(server)
    ids = [i.message.message_id for i in items]
    assert [counts[i] for i in ids] == [1] * len(items)
    assert sum(counts.values()) == len(items)


def assert_windows_kept(items: list[OutboxItem], *, limit: int, window: float) -> None:
    """No ``window`` seconds held more than ``limit`` sends (by the recorded sent_at)."""
    times = sorted(i.sent_at for i in fresh(items))
    for first, later in zip(times, times[limit:], strict=False):
        assert (later - first).total_seconds() >= window, times


# --- The defaults and the schedule ---------------------------------------------------------------


@pytest.mark.django_db
def test_each_provider_has_its_default_and_admins_and_settings_override_it(
    rep_mailbox, team_mailbox, settings
):
    assert limits_of(rep_mailbox) == SendLimits(per_day=250, per_minute=10)
    rep_mailbox.provider = Provider.GMAIL
    assert limits_of(rep_mailbox) == SendLimits(per_day=500, per_minute=20)
    rep_mailbox.provider = Provider.MICROSOFT
    assert limits_of(rep_mailbox) == SendLimits(per_day=5000, per_minute=30)
    settings.SEND_LIMIT_MICROSOFT_PER_DAY = 8000
    rep_mailbox.send_limit_per_minute = 12
    assert limits_of(rep_mailbox) == SendLimits(
        per_day=8000, per_minute=12, per_day_is_default=True, per_minute_is_default=False
    )
    team_mailbox.send_limit_per_day = 5
    assert limits_of(team_mailbox) is None


def test_the_schedule_fills_each_window_up_to_its_limit_in_order(settings):
    settings.SEND_LIMIT_MINUTE_SECONDS = 60
    settings.SEND_LIMIT_DAY_SECONDS = 86400
    now = timezone.now().replace(microsecond=0)
    limits = SendLimits(per_day=5, per_minute=2)
    sends = [now - timedelta(seconds=50), now - timedelta(seconds=10)]
    times = schedule(sends, 4, now=now, limits=limits)
    # Two a minute: +10 s, +50 s (each a minute after the send it follows), then the
    # day is full (5) for the fourth: a day after the first send.
    assert times[0] == now + timedelta(seconds=10)
    assert times[1] == now + timedelta(seconds=50)
    assert times[2] == now + timedelta(seconds=70)
    assert times[3] == sends[0] + timedelta(days=1)
    assert times == sorted(times)


# --- Holding, in one run -------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_over_the_minute_limit_emails_are_held_not_failed_and_keep_their_attempts(
    rep_mailbox, smtp_server
):
    set_limits(rep_mailbox, per_minute=2)
    items = queue(rep_mailbox, 5)

    result = outbox_send_run(rep_mailbox.pk)

    assert (result.sent, result.held, result.failed) == (2, 3, 0)
    items = fresh(items)
    assert [i.state for i in items] == ["sent", "sent", "queued", "queued", "queued"]
    assert sum(received(smtp_server).values()) == 2
    held = items[2:]
    first_send = min(i.sent_at for i in items[:2])
    for item in held:
        assert item.attempts == 0
        assert item.held_until is not None and item.next_attempt_at == item.held_until
        assert item.held_until >= first_send + timedelta(seconds=60)
        delivery = delivery_of(Message.objects.get(pk=item.message_id))
        assert delivery is not None
        assert delivery["state"] == "queued" and delivery["scheduled_for"] == item.held_until
    # Two a minute: the third waits a minute more than the first two.
    assert held[2].held_until >= held[0].held_until + timedelta(seconds=60)
    assert "send limit" in held[0].detail

    # A second run finds nothing due: nothing is sent, nothing changes.
    before = [(i.held_until, i.attempts) for i in held]
    assert outbox_send_run(rep_mailbox.pk).sent == 0
    assert [(i.held_until, i.attempts) for i in fresh(held)] == before


@pytest.mark.django_db(transaction=True)
def test_sends_in_flight_and_of_unknown_outcome_count_against_the_limit(rep_mailbox, smtp_server):
    set_limits(rep_mailbox, per_minute=3)
    items = queue(rep_mailbox, 4)
    now = timezone.now()
    OutboxItem.objects.filter(pk=items[0].pk).update(state=OutboxState.SENDING, claimed_at=now)
    OutboxItem.objects.filter(pk=items[1].pk).update(state=OutboxState.UNKNOWN, claimed_at=now)

    result = outbox_send_run(rep_mailbox.pk)

    assert (result.sent, result.held) == (1, 1)
    assert [i.state for i in fresh(items)[2:]] == ["sent", "queued"]


@pytest.mark.django_db(transaction=True)
def test_runs_of_one_mailbox_at_once_never_send_over_the_limit_together(rep_mailbox, smtp_server):
    set_limits(rep_mailbox, per_minute=3)
    items = queue(rep_mailbox, 10)
    start = threading.Barrier(3)
    results = []

    def one_run() -> None:
        try:
            start.wait()
            results.append(outbox_send_run(rep_mailbox.pk))
        finally:
            connection.close()

    threads = [threading.Thread(target=one_run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert len(results) == 3
    assert sum(r.sent for r in results) == 3
    assert sum(received(smtp_server).values()) == 3
    current = fresh(items)
    assert [i.state for i in current].count("queued") == 7
    assert all(i.held_until is not None and i.attempts == 0 for i in current if i.state == "queued")


@pytest.mark.django_db(transaction=True)
def test_a_team_mailbox_is_not_limited(team_mailbox, smtp_server):
    set_limits(team_mailbox, per_minute=1, per_day=1)  # ignored: team mail has no limits
    items = queue(team_mailbox, 5)

    result = outbox_send_run(team_mailbox.pk)

    assert (result.sent, result.held) == (5, 0)
    assert all(i.held_until is None for i in fresh(items))
    assert_each_sent_once(items, smtp_server)


# --- Going by themselves (a real worker) ---------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("window", ["minute", "day"])
def test_held_emails_go_by_themselves_once_the_window_frees_each_exactly_once(
    engine, rep_mailbox, smtp_server, window
):
    seconds = 4
    if window == "minute":
        set_limits(rep_mailbox, per_minute=2)
        env = {"SEND_LIMIT_MINUTE_SECONDS": str(seconds)}
    else:
        set_limits(rep_mailbox, per_day=2, per_minute=100)
        env = {"SEND_LIMIT_DAY_SECONDS": str(seconds), "SEND_LIMIT_MINUTE_SECONDS": "1"}
    engine.worker(env=env)

    items = queue(rep_mailbox, 5)

    def two_sent_three_held() -> bool:
        current = fresh(items)
        return [i.state for i in current].count("sent") == 2 and all(
            i.held_until is not None for i in current if i.state == "queued"
        )

    wait_until(two_sent_three_held, 20, "two sent and three held")
    assert sum(received(smtp_server).values()) == 2
    assert all(i.attempts == 0 for i in fresh(items) if i.state == "queued")

    wait_until(
        lambda: all(i.state == "sent" for i in fresh(items)),
        4 * seconds + 20,
        "the held emails to go by themselves",
    )
    assert_each_sent_once(items, smtp_server)
    assert_windows_kept(items, limit=2, window=seconds)
    assert all(i.held_until is None and i.attempts == 1 for i in fresh(items))


@pytest.mark.django_db(transaction=True)
def test_an_admin_raising_the_limit_releases_held_mail_at_once(
    engine, rep_mailbox, smtp_server, admin_api
):
    set_limits(rep_mailbox, per_minute=2)
    engine.worker()
    items = queue(rep_mailbox, 5)
    wait_until(
        lambda: (
            OutboxItem.objects.filter(mailbox=rep_mailbox, held_until__isnull=False).count() == 3
        ),
        20,
        "three held for a minute",
    )

    response = admin_api.patch(
        f"/api/v1/mailboxes/{rep_mailbox.pk}/",
        {"send_limits": {"per_minute": 10}},
        format="json",
    )

    assert response.status_code == 200, response.json()
    assert response.json()["send_limits"]["per_minute"] == 10
    wait_until(
        lambda: all(i.state == "sent" for i in fresh(items)), 20, "the released emails to go"
    )
    assert_each_sent_once(items, smtp_server)


# --- The API ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_personal_mailbox_shows_its_effective_limits_and_a_team_mailbox_none(
    rep_mailbox, team_mailbox, admin_api, member_api
):
    set_limits(rep_mailbox, per_day=100)

    mine = member_api.get(f"/api/v1/mailboxes/{rep_mailbox.pk}/").json()
    team = admin_api.get(f"/api/v1/mailboxes/{team_mailbox.pk}/").json()

    assert mine["send_limits"] == {
        "per_day": 100,
        "per_minute": 10,
        "per_day_is_default": False,
        "per_minute_is_default": True,
    }
    assert team["send_limits"] is None


@pytest.mark.django_db
def test_a_member_may_not_change_send_limits_even_of_their_own_mailbox(rep_mailbox, member_api):
    response = member_api.patch(
        f"/api/v1/mailboxes/{rep_mailbox.pk}/",
        {"send_limits": {"per_day": 5000}},
        format="json",
    )

    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"
    rep_mailbox.refresh_from_db()
    assert rep_mailbox.send_limit_per_day is None
    assert AuditEvent.objects.filter(action="mailbox.send_limits_refused").count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    "limits",
    [{"per_day": 0}, {"per_minute": -3}, {"per_day": "many"}, {"per_minute": 10**9}, "fast"],
)
def test_bad_send_limits_are_refused_and_nothing_changes(rep_mailbox, admin_api, limits):
    set_limits(rep_mailbox, per_day=100)

    response = admin_api.patch(
        f"/api/v1/mailboxes/{rep_mailbox.pk}/", {"send_limits": limits}, format="json"
    )

    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
    rep_mailbox.refresh_from_db()
    assert (rep_mailbox.send_limit_per_day, rep_mailbox.send_limit_per_minute) == (100, None)


@pytest.mark.django_db
def test_an_admin_sets_a_limit_and_resets_the_other_to_the_default(rep_mailbox, admin_api):
    set_limits(rep_mailbox, per_day=100, per_minute=5)

    response = admin_api.patch(
        f"/api/v1/mailboxes/{rep_mailbox.pk}/",
        {"send_limits": {"per_day": 2000, "per_minute": None}},
        format="json",
    )

    assert response.status_code == 200
    assert response.json()["send_limits"] == {
        "per_day": 2000,
        "per_minute": 10,
        "per_day_is_default": False,
        "per_minute_is_default": True,
    }
    event = AuditEvent.objects.get(action="mailbox.send_limits_changed")
    assert event.data["before"]["per_day"] == 100 and event.data["after"]["per_day"] == 2000


@pytest.mark.django_db
def test_a_team_mailbox_has_no_send_limits_to_set(team_mailbox, admin_api):
    response = admin_api.patch(
        f"/api/v1/mailboxes/{team_mailbox.pk}/",
        {"send_limits": {"per_day": 10}},
        format="json",
    )

    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
    team_mailbox.refresh_from_db()
    assert team_mailbox.send_limit_per_day is None


@pytest.mark.django_db
def test_the_schema_describes_send_limits_and_delivery(admin_api):
    schema = admin_api.get("/api/schema/?format=json").json()
    parts = schema["components"]["schemas"]
    assert set(parts["SendLimitsOutput"]["properties"]) >= {"per_day", "per_minute"}
    delivery = parts["DeliveryOutput"]["properties"]
    assert {"state", "detail", "scheduled_for", "bounces"} <= set(delivery)
