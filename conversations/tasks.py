"""Thin Celery tasks of the conversations inbox."""

from __future__ import annotations

from celery import shared_task

from conversations.snooze import conversations_wake


@shared_task
def wake_snoozed() -> int:
    """Beat, every minute: snoozed conversations whose time came are open again."""
    return conversations_wake()
