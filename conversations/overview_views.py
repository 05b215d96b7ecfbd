"""The inbox overview, /inbox/overview/<id>/: conversations opened and closed per
day, time to first response and to close, per agent too (server-rendered charts
of conversations/metrics.py, drawn by conversations/charts.py)."""

from __future__ import annotations

from datetime import date
from typing import Any
from uuid import UUID

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_GET

from accounts.auth import AuthenticatedHttpRequest
from conversations.charts import bar_chart, day_labels, duration_text
from conversations.metrics import agent_metrics, conversation_metrics
from conversations.selectors import (
    inbox_conversations_visible_to,
    open_counts,
    other_inboxes_visible_to,
)
from inboxes.selectors import inboxes_visible_to

DAY_CHOICES = (7, 14, 30)


def _days_param(request: HttpRequest) -> int:
    try:
        days = int(request.GET.get("days", 14))
    except ValueError:
        return 14
    return days if days in DAY_CHOICES else 14


@login_required
@require_GET
def inbox_overview(request: AuthenticatedHttpRequest, pk: UUID) -> HttpResponse:
    inbox = get_object_or_404(inboxes_visible_to(request.user), pk=pk)
    days = _days_param(request)
    conversations = inbox_conversations_visible_to(request.user, inbox)
    figures = conversation_metrics(conversations, days=days)
    day_list = [date.fromisoformat(d) for d in figures["days"]]
    full, ticks, _short = day_labels(day_list)

    # Opened and closed share one scale, so their bars compare at a glance.
    shared_top = max([*figures["opened_per_day"], *figures["closed_per_day"]])

    def chart(key: str, verb: str, tone: str) -> dict[str, Any]:
        values = figures[key]
        return bar_chart(
            values,
            full,
            chart_id=f"chart-{verb}",
            title=f"Conversations {verb} per day, last {days} days",
            titles=[f"{label}: {value} {verb}" for label, value in zip(full, values, strict=True)],
            tick_labels=ticks,
            tone=tone,
            scale_to=shared_top,
        )

    agents = []
    # Without the model's ordering: agent_metrics takes .distinct() assignees, and an
    # ORDER BY last_message_at would make that one row per conversation.
    rows = agent_metrics(conversations, days=days)
    # Every sparkline on the same scale: a taller bar is more conversations.
    spark_top = max((max(row["opened_per_day"], default=0) for row in rows), default=0)
    for row in rows:
        opened, closed = sum(row["opened_per_day"]), sum(row["closed_per_day"])
        if not (
            opened or closed or row["first_response"]["count"] or row["time_to_close"]["count"]
        ):
            continue
        agents.append(
            {
                "name": row["name"],
                "opened": opened,
                "closed": closed,
                "first_response": duration_text(row["first_response"]["median_seconds"]),
                "time_to_close": duration_text(row["time_to_close"]["median_seconds"]),
                "spark": bar_chart(
                    row["opened_per_day"],
                    full,
                    chart_id=f"spark-{row['user']}",
                    title=f"Conversations opened per day for {row['name']}",
                    titles=[
                        f"{label}: {value} opened"
                        for label, value in zip(full, row["opened_per_day"], strict=True)
                    ],
                    spark=True,
                    scale_to=spark_top,
                ),
            }
        )

    def timing(key: str) -> dict[str, Any]:
        data = figures[key]
        return {
            "count": data["count"],
            "median": duration_text(data["median_seconds"]),
            "mean": duration_text(data["mean_seconds"]),
        }

    open_now, unassigned_now = open_counts(conversations)
    return render(
        request,
        "conversations/overview.html",
        {
            "section": "inbox",
            "inbox": inbox,
            "days": days,
            "day_choices": [
                {"days": n, "url": f"{reverse('inbox-overview', args=[inbox.pk])}?days={n}"}
                for n in DAY_CHOICES
            ],
            "first_day": day_list[0],
            "last_day": day_list[-1],
            "opened_chart": chart("opened_per_day", "opened", "opened"),
            "closed_chart": chart("closed_per_day", "closed", "closed"),
            "first_response": timing("first_response"),
            "time_to_close": timing("time_to_close"),
            "open_now": open_now,
            "unassigned_now": unassigned_now,
            "agents": agents,
            "other_inboxes": other_inboxes_visible_to(request.user, inbox),
        },
    )
