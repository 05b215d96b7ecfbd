"""Send limits of a personal mailbox: how many emails it may send in a rolling minute
and a rolling day, and what the send run does with an email over the limit.

Every limit rule is here. The run (``run.py``) asks ``limits_of`` once per run;
the claim (``claims.py``) takes at most ``allowance`` items, so nothing is ever
claimed over the limit; an item left due over the limit is held (``hold_over_limit``):
it stays queued, with ``held_until`` and ``next_attempt_at`` set to when it can go,
its attempts untouched, and a run is asked for that moment (``wake_for_held``).

What counts as a send, at the moment a claim is decided (the claims of a limited
mailbox are serialised, ``claims.py``):

- an item ``sent``, at its ``sent_at`` (recorded after the server's 250: never
  earlier than the provider counted it, so a window is never freed too soon);
- an item ``sending`` (claimed, its answer not recorded), as if it went now,
  whenever it was claimed: it goes, or it is settled, before it stops counting;
- an item ``unknown``, as if it went at its claim plus the send lease (it may have
  gone, up to then; the sweeper takes over a claim after the lease).

Failed items (refused for sure) and queued ones do not count. With every claim
taking at most what its windows allow, counting its own items as sending, no
rolling window ever holds more sends than the limit.

Team mailboxes have no limits: a team address answers customers who wrote in (its
volume follows theirs, and a held support reply would be a silent delay), and a
provider's refusal there is already retried with a backoff (``outcomes.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.core.cache import cache
from django.db.models import F, Min, Q
from django.utils import timezone

from inboxes.models import Mailbox, MailboxKind, OutboxItem, OutboxState, Provider

# The provider's published limits, per day and per minute; our limits count messages.
DEFAULT_LIMITS: dict[str, tuple[int, int]] = {
    # Gmail publishes 500 messages a day for a consumer account and 2,000 for Google
    # Workspace. A Gmail sign-in does not tell us which: a custom domain may be
    # Workspace or a consumer account, and Workspace trials start lower still. Going
    # over locks the account's sending for up to a day, so the safe one: 500. Google
    # publishes no per-minute limit; 20 a minute keeps a burst from looking like spam
    # and still sends a day's 500 in half an hour. Admins raise them for Workspace.
    Provider.GMAIL: (500, 20),
    # Exchange Online: 30 messages a minute, and 10,000 recipients a day. Our limits
    # count messages: 5,000 leaves room for a second recipient (a cc) on every email
    # (a CRM email goes to one contact, a sequence step too).
    Provider.MICROSOFT: (5000, 30),
    # Any other server: nobody publishes its limits, and shared hosting commonly
    # allows a few hundred messages a day; conservative until an admin knows better.
    Provider.IMAP: (250, 10),
}

# A Celery ETA beyond the broker's visibility timeout is delivered again (Redis):
# a run further away is asked for in steps; each run that finds nothing due asks
# for the next one.
MAX_WAKE_SECONDS = 3600


@dataclass(frozen=True)
class SendLimits:
    per_day: int
    per_minute: int
    per_day_is_default: bool = True
    per_minute_is_default: bool = True

    def as_dict(self) -> dict[str, Any]:
        return {
            "per_day": self.per_day,
            "per_minute": self.per_minute,
            "per_day_is_default": self.per_day_is_default,
            "per_minute_is_default": self.per_minute_is_default,
        }


def default_limits(provider: str) -> tuple[int, int]:
    """``(per_day, per_minute)`` for a provider: the settings' override
    (``SEND_LIMIT_<PROVIDER>_PER_DAY`` / ``_PER_MINUTE``), else ``DEFAULT_LIMITS``."""
    per_day, per_minute = DEFAULT_LIMITS.get(provider, DEFAULT_LIMITS[Provider.IMAP])
    name = f"SEND_LIMIT_{provider.upper()}"
    return (
        getattr(settings, f"{name}_PER_DAY", None) or per_day,
        getattr(settings, f"{name}_PER_MINUTE", None) or per_minute,
    )


def limits_of(mailbox: Mailbox) -> SendLimits | None:
    """The effective limits of a mailbox; None for a team mailbox (none apply)."""
    if mailbox.kind != MailboxKind.PERSONAL:
        return None
    per_day, per_minute = default_limits(mailbox.provider)
    return SendLimits(
        per_day=mailbox.send_limit_per_day or per_day,
        per_minute=mailbox.send_limit_per_minute or per_minute,
        per_day_is_default=mailbox.send_limit_per_day is None,
        per_minute_is_default=mailbox.send_limit_per_minute is None,
    )


def _minute() -> timedelta:
    return timedelta(seconds=settings.SEND_LIMIT_MINUTE_SECONDS)


def _day() -> timedelta:
    return timedelta(seconds=settings.SEND_LIMIT_DAY_SECONDS)


def _unknown_lag() -> timedelta:
    return timedelta(seconds=settings.OUTBOX_SEND_LEASE_SECONDS)


def _counted(mailbox_id: UUID | str, now: datetime) -> Any:
    """The items that count as sends in the day window (see the module docstring);
    index ``outbox_sends`` (mailbox, state, sent_at)."""
    since = now - _day()
    return OutboxItem.objects.filter(mailbox_id=mailbox_id).filter(
        Q(state=OutboxState.SENT, sent_at__gt=since)
        | Q(state=OutboxState.SENDING)
        | Q(state=OutboxState.UNKNOWN, claimed_at__gt=since - _unknown_lag())
    )


def _sent_count(mailbox_id: UUID | str, since: datetime, cap: int) -> int:
    """Sent items after ``since``, counted up to ``cap``: the newest first along
    ``outbox_sends`` (an index-only scan where the table is vacuumed), stopping at
    the cap."""
    return (
        OutboxItem.objects.filter(mailbox_id=mailbox_id, state=OutboxState.SENT, sent_at__gt=since)
        .order_by("-sent_at")
        .values("sent_at")[:cap]
        .count()
    )


def allowance(mailbox_id: UUID | str, limits: SendLimits, now: datetime) -> int:
    """How many items may be claimed now: the items in flight (few), then the sent
    ones in each window, each counted only up to what its limit leaves."""
    since_minute, since_day, lag = now - _minute(), now - _day(), _unknown_lag()
    sending = unknown_in_day = unknown_in_minute = 0
    for state, claimed_at in OutboxItem.objects.filter(
        mailbox_id=mailbox_id, state__in=[OutboxState.SENDING, OutboxState.UNKNOWN]
    ).values_list("state", "claimed_at"):
        if state == OutboxState.SENDING:
            sending += 1
        elif claimed_at is not None:
            # Of unknown outcome: it may have gone, up to its claim plus the lease.
            unknown_in_day += claimed_at > since_day - lag
            unknown_in_minute += claimed_at > since_minute - lag
    in_minute, in_day = sending + unknown_in_minute, sending + unknown_in_day
    if in_minute >= limits.per_minute or in_day >= limits.per_day:
        return 0
    in_minute += _sent_count(mailbox_id, since_minute, limits.per_minute - in_minute)
    if in_minute >= limits.per_minute:
        return 0
    in_day += _sent_count(mailbox_id, since_day, limits.per_day - in_day)
    return max(0, min(limits.per_day - in_day, limits.per_minute - in_minute))


# --- Holding -------------------------------------------------------------------------------------


def _ceil_second(moment: datetime) -> datetime:
    if moment.microsecond:
        return moment.replace(microsecond=0) + timedelta(seconds=1)
    return moment


def schedule(
    sends: list[datetime], count: int, *, now: datetime, limits: SendLimits
) -> list[datetime]:
    """When each of ``count`` more emails can go, in order, after ``sends`` (the
    counted and planned sends, oldest first; only the last ``per_day`` matter):
    each goes once neither window holds its limit, and never before one planned
    before it (first come, first go). Rounded up to the second."""
    times = list(sends)
    minute, day = _minute(), _day()
    planned: list[datetime] = []
    for _ in range(count):
        n = len(times)
        at = max(now, times[-1]) if times else now
        if n >= limits.per_minute:
            at = max(at, times[n - limits.per_minute] + minute)
        if n >= limits.per_day:
            at = max(at, times[n - limits.per_day] + day)
        at = _ceil_second(at)
        times.append(at)
        planned.append(at)
    return planned


def _sends_and_plans(mailbox_id: UUID | str, limits: SendLimits, now: datetime) -> list[datetime]:
    """The last ``per_day`` counted sends (in-flight ones as now) and planned ones
    (items already held for later), oldest first."""
    cap = limits.per_day
    planned = list(
        OutboxItem.objects.filter(
            mailbox_id=mailbox_id, state=OutboxState.QUEUED, held_until__gt=now
        )
        .order_by("-held_until")
        .values_list("held_until", flat=True)[:cap]
    )
    past: list[datetime] = []
    for state, sent_at, claimed_at in (
        _counted(mailbox_id, now)
        .order_by(F("sent_at").desc(nulls_first=True))  # in flight (no sent_at): the latest
        .values_list("state", "sent_at", "claimed_at")[: max(cap - len(planned), 0)]
    ):
        if state == OutboxState.SENT:
            past.append(sent_at)
        elif state == OutboxState.UNKNOWN:
            past.append(min(claimed_at + _unknown_lag(), now))
        else:
            past.append(now)
    return sorted(past) + sorted(p for p in planned if p is not None)


def hold_over_limit(mailbox: Mailbox, limits: SendLimits) -> int:
    """Hold the mailbox's due items that the limits keep back (called when a claim
    found no room): each stays queued with ``held_until`` = ``next_attempt_at`` =
    when it can go. Its attempts are not touched. Returns how many were held."""
    now = timezone.now()
    due = Q(mailbox_id=mailbox.pk, state=OutboxState.QUEUED) & (
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    )
    ids = list(
        OutboxItem.objects.filter(due).order_by("created_at", "pk").values_list("pk", flat=True)
    )
    if not ids:
        return 0
    times = schedule(_sends_and_plans(mailbox.pk, limits, now), len(ids), now=now, limits=limits)
    groups: dict[datetime, list[UUID]] = {}
    for pk, at in zip(ids, times, strict=True):
        groups.setdefault(at, []).append(pk)
    detail = (
        f"Waiting for the send limit of {mailbox.address} "
        f"({limits.per_minute} a minute, {limits.per_day} a day)."
    )
    held = 0
    for at, pks in groups.items():
        # Still queued and due: a run that claimed one meanwhile keeps it.
        held += OutboxItem.objects.filter(due, pk__in=pks).update(
            held_until=at, next_attempt_at=at, detail=detail
        )
    return held


def next_held(mailbox_id: UUID | str) -> datetime | None:
    """When the first held item of the mailbox is due (index ``outbox_held``)."""
    return OutboxItem.objects.filter(
        mailbox_id=mailbox_id, state=OutboxState.QUEUED, held_until__isnull=False
    ).aggregate(first=Min("held_until"))["first"]


def wake_for_held(mailbox_id: UUID | str) -> datetime | None:
    """Ask for a send run when the mailbox's first held item is due (at most
    ``MAX_WAKE_SECONDS`` ahead); one published per mailbox and moment, however
    many runs ask. Returns the moment asked for."""
    from inboxes.tasks import send_outbox

    first = next_held(mailbox_id)
    if first is None:
        return None
    now = timezone.now()
    at = min(first, now + timedelta(seconds=MAX_WAKE_SECONDS))
    # Half a second late: a run that starts before the item is due finds nothing.
    countdown = max(math.ceil((at - now).total_seconds() * 10) / 10 + 0.5, 0.5)
    key = f"outbox-wake:{mailbox_id}:{at.isoformat()}"
    try:
        fresh = cache.add(key, 1, int(countdown) + 60)
    except Exception:  # noqa: BLE001 - without the cache: publish, a second run is harmless
        fresh = True
    if fresh:
        send_outbox.apply_async(args=[str(mailbox_id)], countdown=countdown)
    return at


def release_held(mailbox_id: UUID | str) -> int:
    """The limits changed: every held item is due now and the next run decides
    again (what still does not fit is held again, at the new limits)."""
    return OutboxItem.objects.filter(
        mailbox_id=mailbox_id, state=OutboxState.QUEUED, held_until__isnull=False
    ).update(held_until=None, next_attempt_at=None, detail="")
