"""Telling people: one notification per person and cause, in the app and (batched,
notifications/mailing.py) by email, as each person chose per kind."""

from __future__ import annotations

from collections.abc import Iterable
from uuid import UUID

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from accounts.models import Role, User
from inboxes.models import Mailbox, MailboxKind
from notifications.models import Incident, Kind, Notification, Setting


def account_admins(account_id: UUID | str) -> QuerySet[User]:
    return User.objects.filter(account_id=account_id, role=Role.ADMIN, is_active=True)


def mailbox_people(mailbox: Mailbox) -> list[User]:
    """Who can fix a mailbox: its owner for a personal one (the admins when the owner
    is deactivated), the account's admins for a team one."""
    owner = mailbox.owner
    if mailbox.kind == MailboxKind.PERSONAL and owner is not None and owner.is_active:
        return [owner]
    return list(account_admins(mailbox.account_id))


def choices_for(users: Iterable[User], kind: str) -> dict[UUID, tuple[bool, bool]]:
    """``{user_id: (in_app, email)}``; no setting: both on."""
    ids = [u.pk for u in users]
    chosen = {
        s.user_id: (s.in_app, s.email) for s in Setting.objects.filter(user_id__in=ids, kind=kind)
    }
    return {pk: chosen.get(pk, (True, True)) for pk in ids}


def notify(
    *,
    account_id: UUID | str,
    users: Iterable[User],
    kind: str,
    text: str,
    url: str,
    subject_type: str,
    subject_id: object,
    key: str,
    incident: Incident | None = None,
) -> int:
    """Notify each active user once per ``key``; returns how many were new."""
    people = {u.pk: u for u in users if u.is_active and str(u.account_id) == str(account_id)}
    if not people:
        return 0
    choices = choices_for(people.values(), kind)
    rows = [
        Notification(
            account_id=account_id,
            user_id=pk,
            kind=kind,
            text=text[:2000],
            url=url,
            subject_type=subject_type,
            subject_id=str(subject_id),
            key=key[:200],
            incident=incident,
            in_app=in_app,
            email_pending=email,
        )
        for pk, (in_app, email) in choices.items()
        if in_app or email
    ]
    before = set(
        Notification.objects.filter(user_id__in=people, key=key[:200]).values_list(
            "user_id", flat=True
        )
    )
    Notification.objects.bulk_create(rows, ignore_conflicts=True)
    new = [row.user_id for row in rows if row.user_id not in before]
    if any(row.email_pending for row in rows if row.user_id in new):
        from notifications.tasks import send_digests

        transaction.on_commit(lambda: send_digests.delay([str(pk) for pk in new]))
    return len(new)


def notification_read(*, user: User, notification_id: UUID | str) -> Notification:
    found = Notification.objects.get(pk=notification_id, user=user)
    if found.read_at is None:
        found.read_at = timezone.now()
        found.save(update_fields=["read_at", "updated_at"])
    return found


def notifications_read_all(*, user: User) -> int:
    return Notification.objects.filter(user=user, read_at__isnull=True).update(
        read_at=timezone.now(), updated_at=timezone.now()
    )


def settings_for(user: User) -> dict[str, dict[str, bool]]:
    choices = {s.kind: s for s in Setting.objects.filter(user=user)}
    return {
        kind: {
            "in_app": choices[kind].in_app if kind in choices else True,
            "email": choices[kind].email if kind in choices else True,
        }
        for kind in Kind.values
    }


def settings_update(
    *, user: User, changes: dict[str, dict[str, bool]]
) -> dict[str, dict[str, bool]]:
    """``changes`` maps kinds to ``{in_app, email}`` (either may be left out)."""
    current = settings_for(user)
    with transaction.atomic():
        for kind, change in changes.items():
            merged = {**current[kind], **change}
            Setting.objects.update_or_create(
                user=user,
                kind=kind,
                defaults={"in_app": merged["in_app"], "email": merged["email"]},
            )
    return settings_for(user)
