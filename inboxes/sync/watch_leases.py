"""Which IMAP watcher process watches which mailbox: leases in the database.

Any number of ``manage.py watch_mailboxes`` processes, on any machines, share the
mailboxes through the database alone:

- each registers a ``WatcherProcess`` row (name ``host:pid:random``) and renews its
  heartbeat and all of its mailbox leases (``Mailbox.watch_owner``,
  ``watch_lease_until``) together, each renewal holding them ``hold_seconds()``
  (WATCH_LEASE_SECONDS less two claim rounds) and made every third of that;
- it claims watchable mailboxes that nobody holds or whose lease ran out with a
  conditional UPDATE (only one process wins each), up to its fair share,
  ceil(watchable / live watchers) (live: a heartbeat within the lease time), and
  its capacity;
- it gives back what it holds above its fair share (plus a little slack), so a
  watcher that starts later gets mailboxes, and drops a mailbox that another took
  or that stopped being watchable;
- a clean shutdown gives everything back and deletes its row; a killed one's leases
  run out and the others take its mailboxes within WATCH_LEASE_SECONDS, and end the
  sync leases it died holding (their tokens name it: inboxes/sync/lease.py).

Every function here is a few queries whatever the number of mailboxes.
"""

from __future__ import annotations

import math
import os
import secrets
import socket
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from inboxes.models import (
    Inbox,
    Mailbox,
    MailboxKind,
    MailboxStatus,
    Provider,
    SyncState,
    WatcherProcess,
)
from inboxes.sync.lease import leases_free_of_watchers

# Above its fair share a watcher keeps this fraction more before giving back, so
# that mailboxes do not move back and forth when watchers come and go.
SHARE_SLACK = 0.05
# Seconds between a watcher's claim rounds (watch_mailboxes --refresh; no more than
# this keeps the takeover within WATCH_LEASE_SECONDS: hold_seconds).
CLAIM_ROUND_SECONDS = 1.0


def lease_seconds() -> int:
    """WATCH_LEASE_SECONDS: a killed watcher's mailboxes are watched by another within it."""
    return int(settings.WATCH_LEASE_SECONDS)


def hold_seconds() -> float:
    """How long a renewal holds the mailboxes (and the heartbeat counts as alive): the
    lease less two claim rounds, so that the round that finds a dead watcher's holds
    run out, and its claim, fall within WATCH_LEASE_SECONDS (at least half of it).
    Renewed every third of it: a watcher stalled for the rest loses its mailboxes."""
    lease = lease_seconds()
    return max(lease - 2 * CLAIM_ROUND_SECONDS, lease / 2)


def new_watcher_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def watchable_mailboxes() -> QuerySet[Mailbox]:
    """Syncable IMAP mailboxes (the rules of ``mailbox_syncable``, in one query)."""
    has_inbox = Exists(Inbox.objects.filter(mailbox=OuterRef("pk")))
    return (
        Mailbox.objects.filter(provider=Provider.IMAP)
        .exclude(status__in=[MailboxStatus.DISCONNECTED, MailboxStatus.NEEDS_REAUTH])
        .exclude(sync_state=SyncState.STOPPED)
        .filter(
            Q(kind=MailboxKind.PERSONAL, owner__is_active=True)
            | Q(Q(kind=MailboxKind.TEAM) & has_inbox)
        )
    )


def _free(now: datetime) -> Q:
    return Q(watch_owner="") | Q(watch_lease_until__isnull=True) | Q(watch_lease_until__lt=now)


def register(name: str, capacity: int) -> WatcherProcess:
    now = timezone.now()
    process, _ = WatcherProcess.objects.update_or_create(
        name=name,
        defaults={
            "hostname": name.split(":", 1)[0],
            "pid": os.getpid(),
            "capacity": capacity,
            "heartbeat_at": now,
        },
    )
    return process


def renew(name: str, capacity: int, *, idling: set[str], rss_bytes: int = 0) -> datetime:
    """Heartbeat, every lease this watcher holds, and the push of the mailboxes whose
    IDLE is live (``pushed_until``: the poll backs off). Returns the new lease end."""
    now = timezone.now()
    until = now + timedelta(seconds=hold_seconds())
    held = Mailbox.objects.filter(watch_owner=name)
    watching = held.update(watch_lease_until=until)
    if idling:
        held.filter(pk__in=idling).update(pushed_until=until, push_error="")
    if not WatcherProcess.objects.filter(name=name).update(
        heartbeat_at=now, watching=watching, rss_bytes=rss_bytes
    ):
        register(name, capacity)  # someone removed our row (cleanup of a paused process)
    return until


def live_watchers(now: datetime | None = None) -> int:
    now = now or timezone.now()
    return WatcherProcess.objects.filter(
        heartbeat_at__gte=now - timedelta(seconds=hold_seconds())
    ).count()


def fair_share(watchable: int, live: int, capacity: int) -> int:
    return min(capacity, math.ceil(watchable / max(live, 1)))


def held_by(name: str, now: datetime | None = None) -> set[str]:
    """The mailboxes this watcher holds a running lease on."""
    now = now or timezone.now()
    return {
        str(pk)
        for pk in Mailbox.objects.filter(watch_owner=name, watch_lease_until__gte=now).values_list(
            "pk", flat=True
        )
    }


def claim(name: str, wanted: int, now: datetime | None = None) -> list[str]:
    """Take up to ``wanted`` watchable mailboxes that nobody holds, in one conditional
    UPDATE (a takeover of 500 is one statement, not 500), so two watchers never both
    win one; the ones another watcher took first are left for the next round."""
    if wanted <= 0:
        return []
    now = now or timezone.now()
    until = now + timedelta(seconds=hold_seconds())
    candidates = list(
        watchable_mailboxes()
        .filter(_free(now))
        .order_by("watch_lease_until", "pk")
        .values_list("pk", flat=True)[:wanted]
    )
    if not candidates:
        return []
    Mailbox.objects.filter(pk__in=candidates).filter(_free(now)).update(
        watch_owner=name, watch_lease_until=until
    )
    return [
        str(pk)
        for pk in Mailbox.objects.filter(
            pk__in=candidates, watch_owner=name, watch_lease_until=until
        ).values_list("pk", flat=True)
    ]


def release(name: str, mailbox_ids: list[str] | set[str]) -> None:
    """Give mailboxes back (only those still ours): another watcher may take them at
    once; until one does, the poll covers them."""
    if mailbox_ids:
        Mailbox.objects.filter(pk__in=list(mailbox_ids), watch_owner=name).update(
            watch_owner="", watch_lease_until=None, pushed_until=None
        )


def retire(name: str) -> None:
    """A clean shutdown: every lease back, the row gone."""
    Mailbox.objects.filter(watch_owner=name).update(
        watch_owner="", watch_lease_until=None, pushed_until=None
    )
    WatcherProcess.objects.filter(name=name).delete()


def orphaned_requests(name: str, now: datetime | None = None) -> list[str]:
    """Mailboxes of this watcher whose requested sync nobody runs: it was asked for
    while another process held the sync lease, and that process died with it (the
    lease has run out since). One query."""
    now = now or timezone.now()
    return [
        str(pk)
        for pk in Mailbox.objects.filter(watch_owner=name, sync_requested=True)
        .filter(Q(sync_lease_until__isnull=True) | Q(sync_lease_until__lt=now))
        .values_list("pk", flat=True)
    ]


def free_dead_watchers_sync_leases(name: str, now: datetime | None = None) -> int:
    """The sync leases that dead watchers (no heartbeat within the hold time) still
    hold on this watcher's mailboxes: ended now, so the syncs they block (the
    requested ones that ``orphaned_requests`` finds) run at once instead of after
    SYNC_LEASE_SECONDS. One query when no watcher died."""
    now = now or timezone.now()
    dead = list(
        WatcherProcess.objects.filter(
            heartbeat_at__lt=now - timedelta(seconds=hold_seconds())
        ).values_list("name", flat=True)
    )
    if not dead:
        return 0
    return leases_free_of_watchers(dead, Mailbox.objects.filter(watch_owner=name))


def forget_dead_watchers(now: datetime | None = None) -> int:
    """Rows of watchers silent for ten lease times (killed ones): gone."""
    now = now or timezone.now()
    deleted, _ = WatcherProcess.objects.filter(
        heartbeat_at__lt=now - timedelta(seconds=10 * lease_seconds())
    ).delete()
    return deleted


def plan_round(name: str, capacity: int, holding: set[str]) -> tuple[set[str], list[str], set[str]]:
    """One claim round: (what to keep watching, what was just claimed, what to stop).

    ``holding``: the mailboxes this process watches now. Three cheap queries, and
    two more when it claims."""
    now = timezone.now()
    watchable = {str(pk) for pk in watchable_mailboxes().values_list("pk", flat=True)}
    mine = held_by(name, now) & watchable
    gone = set(holding) - mine
    release(name, gone)  # no longer watchable (another watcher's lease is not touched)
    share = fair_share(len(watchable), live_watchers(now), capacity)
    claimed: list[str] = []
    keep = share + math.floor(share * SHARE_SLACK)
    if len(mine) > keep:
        extra = sorted(mine)[: len(mine) - share]
        release(name, extra)
        mine -= set(extra)
        gone |= set(extra)
    elif len(mine) < share:
        claimed = claim(name, share - len(mine), now)
        mine |= set(claimed)
    return mine, claimed, gone
