from __future__ import annotations

from celery import shared_task

from inboxes.models import Mailbox
from notifications.incidents import BROKEN, mailbox_health_changed
from notifications.mailing import digest_send, users_with_pending_email
from notifications.models import Incident, Kind


@shared_task  # type: ignore[untyped-decorator]
def send_digests(user_ids: list[str] | None = None) -> int:
    """Email what is pending: for ``user_ids``, or (beat) for everyone who has some."""
    return sum(digest_send(pk) for pk in (user_ids or users_with_pending_email()))


@shared_task  # type: ignore[untyped-decorator]
def check_mailbox_health() -> int:
    """The safety net under the engine's reports: broken mailboxes without an open
    incident, and open incidents whose mailbox works again."""
    broken = set(Mailbox.objects.filter(status__in=BROKEN).values_list("pk", flat=True))
    open_ids = set(
        Incident.objects.filter(
            kind=Kind.MAILBOX_NEEDS_ATTENTION, resolved_at__isnull=True
        ).values_list("subject_id", flat=True)
    )
    todo = {str(pk) for pk in broken} ^ open_ids
    for mailbox_id in todo:
        mailbox_health_changed(mailbox_id)
    return len(todo)
