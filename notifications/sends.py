"""Sends that failed, or whose outcome cannot be known: the person who sent it hears.

The engine knows the mailbox, not who wrote the email: the products that send
(the conversations inbox, the CRM) register a ``SenderResolver`` here, in their
``AppConfig.ready()``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID

from accounts.models import User
from inboxes.models import Message, MessageKind, OutboxItem, OutboxState
from notifications.models import Kind
from notifications.services import notify


@dataclass(frozen=True)
class Sender:
    user: User
    subject_type: str  # notifications.models.SubjectType
    subject_id: object
    url: str


SenderResolver = Callable[[OutboxItem], Sender | None]
_resolvers: list[SenderResolver] = []


def register_sender_resolver(resolver: SenderResolver) -> None:
    if resolver not in _resolvers:
        _resolvers.append(resolver)


def _sender_of(item: OutboxItem) -> Sender | None:
    for resolver in _resolvers:
        found = resolver(item)
        if found is not None:
            return found
    return None


def send_outcome_reported(item_id: UUID | str) -> None:
    item = OutboxItem.objects.select_related("message", "mailbox").filter(pk=item_id).first()
    if item is None or item.state not in (OutboxState.FAILED, OutboxState.UNKNOWN):
        return
    sender = _sender_of(item)
    if sender is None:
        return
    subject = item.message.subject or "(no subject)"
    to = ", ".join(item.recipients[:3]) + ("..." if len(item.recipients) > 3 else "")
    if item.state == OutboxState.FAILED:
        kind = Kind.SEND_FAILED
        text = f'"{subject}" to {to} was not sent: {item.detail} Open it to send it again.'
    else:
        kind = Kind.SEND_UNKNOWN
        text = (
            f'"{subject}" to {to} may not have arrived: {item.detail} '
            "Check with the recipient before sending it again."
        )
    notify(
        account_id=item.account_id,
        users=[sender.user],
        kind=kind,
        text=text,
        url=sender.url,
        subject_type=sender.subject_type,
        subject_id=sender.subject_id,
        key=f"outbox:{item.pk}:{kind}",
    )


def bounce_reported(bounce_message_id: UUID | str) -> None:
    """A bounce tied to an email someone sent: they hear which address refused it."""
    report = Message.objects.filter(pk=bounce_message_id, kind=MessageKind.BOUNCE).first()
    if report is None or report.bounce_of_id is None:
        return
    item = OutboxItem.objects.select_related("message").filter(message_id=report.bounce_of_id)
    found = item.first()
    if found is None:
        return
    sender = _sender_of(found)
    if sender is None:
        return
    failed = [
        f"{r.get('address', '')}: {r.get('diagnostic') or r.get('status') or 'refused'}"
        for r in (report.bounce or {}).get("recipients", [])
    ]
    subject = found.message.subject or "(no subject)"
    notify(
        account_id=found.account_id,
        users=[sender.user],
        kind=Kind.EMAIL_BOUNCED,
        text=f'"{subject}" was not delivered to ' + ("; ".join(failed) or "a recipient") + ".",
        url=sender.url,
        subject_type=sender.subject_type,
        subject_id=sender.subject_id,
        key=f"bounce:{report.pk}",
    )
