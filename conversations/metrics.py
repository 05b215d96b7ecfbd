"""Inbox and agent metrics: opened and closed per day, time to first response,
time to close. Computed from the conversations and their events."""

from __future__ import annotations

import statistics
from datetime import date, datetime, timedelta

from django.db.models import Count, QuerySet
from django.db.models.functions import TruncDate
from django.utils import timezone

from conversations.models import Conversation, ConversationEvent, EventKind


def _seconds(pairs) -> dict:
    durations = [
        (end - start).total_seconds() for start, end in pairs if start and end and end >= start
    ]
    if not durations:
        return {"count": 0, "median_seconds": None, "mean_seconds": None}
    return {
        "count": len(durations),
        "median_seconds": round(statistics.median(durations)),
        "mean_seconds": round(statistics.fmean(durations)),
    }


def _per_day(rows, days: list[date]) -> list[int]:
    counts = {row["day"]: row["n"] for row in rows}
    return [counts.get(day, 0) for day in days]


def conversation_metrics(conversations: QuerySet[Conversation], *, days: int = 14) -> dict:
    """Metrics over ``conversations`` (already scoped to what the viewer may see)."""
    today = timezone.localdate()
    day_list = [today - timedelta(days=offset) for offset in range(days - 1, -1, -1)]
    since = timezone.make_aware(datetime.combine(day_list[0], datetime.min.time()))
    opened = (
        conversations.filter(created_at__gte=since)
        .annotate(day=TruncDate("created_at"))
        .values("day")
        .annotate(n=Count("id"))
    )
    closed = (
        ConversationEvent.objects.filter(
            conversation__in=conversations, kind=EventKind.CLOSED, created_at__gte=since
        )
        .annotate(day=TruncDate("created_at"))
        .values("day")
        .annotate(n=Count("id"))
    )
    responded = conversations.filter(first_response_at__gte=since).values_list(
        "created_at", "first_response_at"
    )
    finished = conversations.filter(closed_at__gte=since, status="closed").values_list(
        "created_at", "closed_at"
    )
    return {
        "days": [d.isoformat() for d in day_list],
        "opened_per_day": _per_day(opened, day_list),
        "closed_per_day": _per_day(closed, day_list),
        "first_response": _seconds(responded),
        "time_to_close": _seconds(finished),
    }


def agent_metrics(conversations: QuerySet[Conversation], *, days: int = 14) -> list[dict]:
    """The same figures per assignee."""
    assignees = (
        conversations.exclude(assignee__isnull=True)
        .order_by()  # the default ordering would leak into DISTINCT: one row per conversation
        .values_list("assignee", "assignee__full_name", "assignee__email")
        .distinct()
    )
    rows = []
    for user_id, full_name, email in assignees:
        figures = conversation_metrics(conversations.filter(assignee_id=user_id), days=days)
        rows.append({"user": str(user_id), "name": full_name or email, **figures})
    return sorted(rows, key=lambda row: row["name"].lower())
