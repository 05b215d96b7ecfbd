"""Thin Celery tasks: one service call each."""

from __future__ import annotations

from celery import shared_task

from crm.steps import steps_send_due


@shared_task  # type: ignore[untyped-decorator]  # celery has no type hints
def send_due_steps() -> dict[str, int]:
    """Beat runs it every minute; two at once send each step once (crm/steps.py)."""
    run = steps_send_due()
    return {"sent": run.sent, "finished": run.finished, "bounced": run.bounced, "held": run.held}
