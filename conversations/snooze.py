"""Snooze: an open conversation leaves the open lists until a chosen time, then comes
back as open by itself (the beat task ``conversations.tasks.wake_snoozed`` calls
``conversations_wake`` every minute).

A snoozed conversation keeps its status (open); ``snoozed_until`` is what the lists
look at (conversations/selectors.py). Closing one ends its snooze.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from accounts.models import User
from conversations.models import Conversation, ConversationEvent, ConversationStatus, EventKind
from conversations.selectors import conversations_visible_to
from core.errors import Invalid

SNOOZE_MAX = timedelta(days=366)
WAKE_CHUNK = 500


def _check_can_work(actor: User, conversation: Conversation) -> None:
    if not conversations_visible_to(actor).filter(pk=conversation.pk).exists():
        raise Invalid("Unknown conversation.")


def conversation_snooze(
    *, actor: User, conversation: Conversation, until: datetime, now: datetime | None = None
) -> None:
    """Out of the open lists until ``until`` (a moment after ``now``, within a year)."""
    _check_can_work(actor, conversation)
    now = now or timezone.now()
    if conversation.status != ConversationStatus.OPEN:
        raise Invalid("Only an open conversation can be snoozed: reopen it first.")
    if timezone.is_naive(until):
        until = timezone.make_aware(until)
    if until <= now:
        raise Invalid(
            "Pick a time in the future to snooze until.",
            errors={"until": ["A time in the future."]},
        )
    if until > now + SNOOZE_MAX:
        raise Invalid(
            "Snooze for at most a year: pick an earlier time.",
            errors={"until": ["At most a year from now."]},
        )
    with transaction.atomic():
        Conversation.objects.filter(pk=conversation.pk).update(snoozed_until=until, updated_at=now)
        ConversationEvent.objects.create(
            conversation=conversation,
            kind=EventKind.SNOOZED,
            actor=actor,
            detail={"until": until.isoformat()},
        )
    conversation.snoozed_until = until


def conversation_unsnooze(*, actor: User, conversation: Conversation) -> None:
    """Back in the open lists now."""
    _check_can_work(actor, conversation)
    with transaction.atomic():
        woken = Conversation.objects.filter(pk=conversation.pk, snoozed_until__isnull=False).update(
            snoozed_until=None, updated_at=timezone.now()
        )
        if woken:
            ConversationEvent.objects.create(
                conversation=conversation, kind=EventKind.WOKE, actor=actor
            )
    conversation.snoozed_until = None


def snooze_presets(now: datetime | None = None) -> list[tuple[str, str, datetime]]:
    """The composer's quick choices (key, label, moment), in local time: three hours
    from now, tomorrow at 09:00, next Monday at 09:00."""
    local = timezone.localtime(now or timezone.now())
    nine = local.replace(hour=9, minute=0, second=0, microsecond=0)
    tomorrow = nine + timedelta(days=1)
    monday = nine + timedelta(days=7 - local.weekday())
    later = (local + timedelta(hours=3)).replace(second=0, microsecond=0)
    return [
        (
            "later",
            f"Later today ({later:%H:%M})"
            if later.date() == local.date()
            else f"In 3 hours ({later:%a %H:%M})",
            later,
        ),
        ("tomorrow", f"Tomorrow ({tomorrow:%a} 09:00)", tomorrow),
        ("monday", f"Next week ({monday:%a} {monday.day} {monday:%b}, 09:00)", monday),
    ]


def snooze_moment(preset: str, typed: str, now: datetime | None = None) -> datetime:
    """The moment a snooze form names: a typed local date and time
    (``2026-12-08T09:00``, from ``<input type="datetime-local">``), else a preset."""
    if typed.strip():
        try:
            moment = datetime.fromisoformat(typed.strip())
        except ValueError:
            raise Invalid(
                "Give the date and time as 2026-12-08 09:00.",
                errors={"until": ["Not a date and time."]},
            ) from None
        return timezone.make_aware(moment) if timezone.is_naive(moment) else moment
    for key, _label, moment in snooze_presets(now):
        if key == preset:
            return moment
    raise Invalid("Choose when the conversation comes back.", errors={"until": ["Required."]})


def conversations_wake(*, now: datetime | None = None) -> int:
    """Every conversation whose snooze ended by ``now`` is open in the lists again;
    returns how many. Safe to run twice or in parallel: the rows are claimed with
    FOR UPDATE SKIP LOCKED and only a row still snoozed is woken."""
    now = now or timezone.now()
    woken = 0
    while True:
        with transaction.atomic():
            due = list(
                Conversation.objects.select_for_update(skip_locked=True)
                .filter(snoozed_until__lte=now)
                .order_by("snoozed_until")
                .values_list("pk", flat=True)[:WAKE_CHUNK]
            )
            if not due:
                return woken
            Conversation.objects.filter(pk__in=due).update(snoozed_until=None, updated_at=now)
            ConversationEvent.objects.bulk_create(
                ConversationEvent(
                    conversation_id=pk, kind=EventKind.WOKE, detail={"reason": "the snooze ended"}
                )
                for pk in due
            )
        woken += len(due)
        if len(due) < WAKE_CHUNK:
            return woken
