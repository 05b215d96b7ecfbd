"""The watcher's leases in the database (inboxes/sync/watch_leases.py), without IMAP."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from inboxes.addresses import canonical_address
from inboxes.models import Mailbox, MailboxKind, MailboxStatus, Provider, WatcherProcess
from inboxes.sync import watch_leases
from inboxes.sync.lease import lease_acquire, syncing_as_watcher, watcher_token_prefix

pytestmark = pytest.mark.django_db


def imap_mailbox(owner, n: int) -> Mailbox:
    address = f"watched{n}@acme.example.com"
    return Mailbox.objects.create(
        account=owner.account,
        address=address,
        canonical_address=canonical_address(address),
        kind=MailboxKind.PERSONAL,
        provider=Provider.IMAP,
        owner=owner,
        connected_by=owner,
    )


@pytest.fixture
def mailboxes(admin):
    return [imap_mailbox(admin, n) for n in range(10)]


def owners() -> dict[str, int]:
    counts: dict[str, int] = {}
    for owner in Mailbox.objects.values_list("watch_owner", flat=True):
        counts[owner] = counts.get(owner, 0) + 1
    return counts


def test_a_claim_is_conditional_one_watcher_wins_each_mailbox(mailboxes):
    won_a = watch_leases.claim("a", 6)
    won_b = watch_leases.claim("b", 10)
    assert len(won_a) == 6 and len(won_b) == 4
    assert not set(won_a) & set(won_b)
    assert owners() == {"a": 6, "b": 4}
    assert watch_leases.claim("c", 10) == []  # nothing free, nothing stolen


def test_an_expired_lease_is_free_to_claim_a_running_one_is_not(mailboxes):
    watch_leases.claim("a", 10)
    assert watch_leases.held_by("a") == {str(m.pk) for m in mailboxes}
    Mailbox.objects.filter(pk=mailboxes[0].pk).update(
        watch_lease_until=timezone.now() - timedelta(seconds=1)
    )
    assert watch_leases.held_by("a") == {str(m.pk) for m in mailboxes[1:]}
    assert watch_leases.claim("b", 10) == [str(mailboxes[0].pk)]


def test_the_fair_share_counts_live_watchers_and_the_capacity():
    assert watch_leases.fair_share(10, 1, 5000) == 10
    assert watch_leases.fair_share(10, 3, 5000) == 4
    assert watch_leases.fair_share(10, 0, 5000) == 10
    assert watch_leases.fair_share(1000, 2, 300) == 300


def test_a_new_watcher_gets_its_share_the_first_gives_back_its_extras(mailboxes, settings):
    settings.WATCH_LEASE_SECONDS = 60
    watch_leases.register("a", 5000)
    keep, claimed, _ = watch_leases.plan_round("a", 5000, set())
    assert len(keep) == len(claimed) == 10

    watch_leases.register("b", 5000)
    keep_b, claimed_b, _ = watch_leases.plan_round("b", 5000, set())
    assert claimed_b == []  # a holds everything yet
    keep_a, _, gone_a = watch_leases.plan_round("a", 5000, keep)
    assert len(keep_a) == 5 and len(gone_a) == 5
    keep_b, claimed_b, _ = watch_leases.plan_round("b", 5000, keep_b)
    assert len(keep_b) == 5 and set(claimed_b) == gone_a
    assert owners() == {"a": 5, "b": 5}

    # a dead watcher (no heartbeat for a lease time) no longer counts
    WatcherProcess.objects.filter(name="a").update(
        heartbeat_at=timezone.now() - timedelta(seconds=61)
    )
    assert watch_leases.live_watchers() == 1


def test_renewing_extends_every_lease_and_the_push_of_idling_mailboxes(mailboxes, settings):
    settings.WATCH_LEASE_SECONDS = 60
    watch_leases.register("a", 5000)
    watch_leases.claim("a", 3)
    held = sorted(watch_leases.held_by("a"))
    until = watch_leases.renew("a", 5000, idling={held[0]}, rss_bytes=123)
    rows = {str(m.pk): m for m in Mailbox.objects.filter(watch_owner="a")}
    assert all(m.watch_lease_until == until for m in rows.values())
    assert rows[held[0]].pushed_until == until
    assert rows[held[1]].pushed_until is None
    process = WatcherProcess.objects.get(name="a")
    assert (process.watching, process.rss_bytes) == (3, 123)


def test_a_mailbox_that_stops_being_watchable_is_given_back(mailboxes):
    watch_leases.register("a", 5000)
    keep, _, _ = watch_leases.plan_round("a", 5000, set())
    Mailbox.objects.filter(pk=mailboxes[0].pk).update(status=MailboxStatus.DISCONNECTED)
    keep2, _, gone = watch_leases.plan_round("a", 5000, keep)
    assert gone == {str(mailboxes[0].pk)}
    assert keep2 == keep - gone
    assert Mailbox.objects.get(pk=mailboxes[0].pk).watch_owner == ""


def test_another_provider_or_a_deactivated_owner_is_not_watchable(admin, member):
    imap_mailbox(admin, 1)
    imap_mailbox(member, 2)
    gmail = imap_mailbox(admin, 3)
    Mailbox.objects.filter(pk=gmail.pk).update(provider=Provider.GMAIL)
    member.is_active = False
    member.save()
    assert [m.address for m in watch_leases.watchable_mailboxes()] == ["watched1@acme.example.com"]


def test_a_clean_shutdown_gives_everything_back_and_removes_the_row(mailboxes):
    watch_leases.register("a", 5000)
    watch_leases.claim("a", 10)
    watch_leases.renew("a", 5000, idling={str(m.pk) for m in mailboxes})
    watch_leases.retire("a")
    assert owners() == {"": 10}
    assert not Mailbox.objects.filter(pushed_until__isnull=False).exists()
    assert not WatcherProcess.objects.filter(name="a").exists()


def test_a_dead_watchers_sync_leases_are_freed_for_the_mailboxes_new_owner(mailboxes, settings):
    """A watcher killed mid-sync leaves its sync leases behind: the watcher that takes
    the mailbox over ends them once the dead one's heartbeat is past the lease time,
    not SYNC_LEASE_SECONDS later; a live watcher's and a worker's leases stay."""
    settings.WATCH_LEASE_SECONDS = 10
    settings.SYNC_LEASE_SECONDS = 120
    dead, live, worker = mailboxes[0], mailboxes[1], mailboxes[2]
    watch_leases.register("dead", 5000)
    watch_leases.register("live", 5000)
    with syncing_as_watcher("dead"):
        dead_token = lease_acquire(dead.pk)
    with syncing_as_watcher("live"):
        live_token = lease_acquire(live.pk)
    worker_token = lease_acquire(worker.pk)
    assert dead_token.startswith(watcher_token_prefix("dead")) and len(dead_token) <= 64
    assert not worker_token.startswith("w")
    Mailbox.objects.filter(pk__in=[m.pk for m in mailboxes[:3]]).update(
        watch_owner="new", sync_requested=True
    )

    # While "dead" still beats, nothing is freed and the requests wait for the leases.
    assert watch_leases.free_dead_watchers_sync_leases("new") == 0
    assert watch_leases.orphaned_requests("new") == []

    WatcherProcess.objects.filter(name="dead").update(
        heartbeat_at=timezone.now() - timedelta(seconds=11)
    )
    assert watch_leases.free_dead_watchers_sync_leases("new") == 1
    assert watch_leases.orphaned_requests("new") == [str(dead.pk)]
    assert lease_acquire(dead.pk) is not None  # the new owner can sync it now
    assert lease_acquire(live.pk) is None and lease_acquire(worker.pk) is None
    # Only the mailboxes the asking watcher holds are touched.
    with syncing_as_watcher("dead"):
        other = lease_acquire(mailboxes[3].pk)
    assert other is not None
    assert watch_leases.free_dead_watchers_sync_leases("new") == 0
    assert live_token and worker_token


def test_a_renewal_holds_two_claim_rounds_less_than_the_lease(mailboxes, settings):
    """The round that finds a dead watcher's holds run out, and its claim, fall within
    WATCH_LEASE_SECONDS; a very short lease still holds half of it."""
    settings.WATCH_LEASE_SECONDS = 10
    assert watch_leases.hold_seconds() == 10 - 2 * watch_leases.CLAIM_ROUND_SECONDS
    watch_leases.register("a", 5000)
    watch_leases.claim("a", 10)
    hold = timedelta(seconds=watch_leases.hold_seconds())
    before = timezone.now()
    until = watch_leases.renew("a", 5000, idling=set())
    assert before + hold <= until <= timezone.now() + hold
    assert set(Mailbox.objects.values_list("watch_lease_until", flat=True)) == {until}
    settings.WATCH_LEASE_SECONDS = 1
    assert watch_leases.hold_seconds() == 0.5
