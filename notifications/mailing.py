"""Notifications by email: batched, one email per person per few minutes at most,
through the operator's outgoing mail (EMAIL_URL), never a customer's mailbox."""

from __future__ import annotations

import logging
from datetime import timedelta
from uuid import UUID

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import User
from core.mail import product_mail_send
from inboxes.automail import automatic_send_refusal
from notifications.models import Digest, Notification

log = logging.getLogger(__name__)

MAX_ITEMS = 50


def _window() -> timedelta:
    return timedelta(minutes=settings.NOTIFICATION_EMAIL_MINUTES)


def _claim(user_id: UUID | str) -> tuple[bool, object]:
    """Take this person's digest slot: one sender wins, and only once per window.
    Returns (won, previous last_sent_at) so an empty or failed digest can give it back."""
    now = timezone.now()
    earliest = now - _window()
    try:
        with transaction.atomic():
            Digest.objects.get_or_create(
                user_id=user_id, defaults={"last_sent_at": earliest - timedelta(seconds=1)}
            )
    except IntegrityError:
        pass
    previous = Digest.objects.filter(user_id=user_id).values_list("last_sent_at", flat=True).first()
    won = Digest.objects.filter(user_id=user_id, last_sent_at__lte=earliest).update(
        last_sent_at=now
    )
    return bool(won), previous


def _give_back(user_id: UUID | str, previous: object) -> None:
    Digest.objects.filter(user_id=user_id).update(last_sent_at=previous)


def _digest(user: User, items: list[Notification]) -> tuple[str, str]:
    """The digest's subject and text."""
    if len(items) == 1:
        subject = items[0].text.split(". ")[0][:150]
    else:
        subject = f"{len(items)} things happened in Postkamer"
    lines = [f"Hello {user.display_name},", ""]
    for item in items:
        lines.append(f"- {item.text}")
        if item.url:
            lines.append(f"  {settings.PUBLIC_URL}{item.url}")
    lines += [
        "",
        f"All notifications: {settings.PUBLIC_URL}/notifications/",
        f"Choose what you get by email: {settings.PUBLIC_URL}/settings/notifications/",
    ]
    return f"Postkamer: {subject}", "\n".join(lines)


def digest_send(user_id: UUID | str) -> int:
    """Email this person what is pending, if their window allows; returns how many
    notifications the email listed (0: nothing sent now)."""
    user = User.objects.filter(pk=user_id).first()
    pending = Notification.objects.filter(user_id=user_id, email_pending=True)
    if user is None or not user.is_active:
        pending.update(email_pending=False)  # a deactivated user gets nothing
        return 0
    refusal = automatic_send_refusal(user.account_id, user.email)
    if refusal:
        # Their address is one of the account's own mailboxes (a team address used as
        # a login, say): the email would come back in as mail and be notified again.
        # They see it in the app.
        log.warning("no notification email to %s: %s", user.email, refusal)
        pending.update(email_pending=False)
        return 0
    if not pending.exists():
        return 0
    won, previous = _claim(user_id)
    if not won:
        return 0  # emailed a moment ago: the next beat takes these, batched
    items = list(pending.order_by("created_at")[:MAX_ITEMS])
    if not items:
        _give_back(user_id, previous)
        return 0
    subject, text = _digest(user, items)
    try:
        product_mail_send(to=[user.email], subject=subject, text=text)
    except Exception:
        log.exception("notification email to %s failed; kept for the next try", user.email)
        _give_back(user_id, previous)
        return 0
    Notification.objects.filter(pk__in=[i.pk for i in items]).update(
        email_pending=False, emailed_at=timezone.now()
    )
    return len(items)


def users_with_pending_email() -> list[str]:
    return [
        str(pk)
        for pk in Notification.objects.filter(email_pending=True)
        .values_list("user_id", flat=True)
        .distinct()
    ]
