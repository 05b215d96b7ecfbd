"""What became of an outbound email: its outbox state, a send limit holding it back,
and the delivery reports (bounces) tied to it. One answer for every product."""

from __future__ import annotations

from typing import Any

from inboxes.models import (
    Direction,
    MailboxStatus,
    Message,
    MessageKind,
    OutboxItem,
    OutboxState,
)

BOUNCED = "bounced"


def bounces_of(message: Message) -> list[dict[str, Any]]:
    """``[{address, status, diagnostic, at}]`` from the bounces tied to ``message``
    (for a prefetch, ``bounces`` is the reverse of ``Message.bounce_of``)."""
    found: list[dict[str, Any]] = []
    for report in message.bounces.all():
        if report.kind != MessageKind.BOUNCE or not report.bounce:
            continue
        for recipient in report.bounce.get("recipients", []):
            found.append(
                {
                    "address": recipient.get("address", ""),
                    "status": recipient.get("status", ""),
                    "diagnostic": recipient.get("diagnostic", ""),
                    "action": recipient.get("action", ""),
                    "at": report.sent_at or report.created_at,
                }
            )
    return found


def is_hard(status: str) -> bool:
    """RFC 3463: a permanent failure is class 5."""
    return status.startswith("5")


def is_hard_failure(recipient: dict[str, Any]) -> bool:
    """A bounce's recipient line that failed for good (no action given: failed)."""
    action = str(recipient.get("action") or "failed").lower()
    return action == "failed" and is_hard(str(recipient.get("status") or ""))


def delivery_of(message: Message) -> dict[str, Any] | None:
    """``{state, detail, scheduled_for, bounces}`` for an outbound message, else None."""
    if message.direction != Direction.OUTBOUND:
        return None
    try:
        item: OutboxItem | None = message.outbox
    except OutboxItem.DoesNotExist:
        item = None
    bounces = bounces_of(message)
    state = item.state if item is not None else OutboxState.SENT
    detail = item.detail if item is not None else ""
    failed = [b for b in bounces if is_hard_failure(b)]
    if failed and state in (OutboxState.SENT, OutboxState.UNKNOWN):
        state = BOUNCED
        detail = "; ".join(
            f"Not delivered to {b['address']}: {b['diagnostic'] or b['status']}" for b in failed
        )
    held = item.held_until if item is not None and item.state == OutboxState.QUEUED else None
    if item is not None and item.state == OutboxState.QUEUED and held is None:
        detail = waiting_detail(item) or detail
    return {
        "state": state,
        "detail": detail,
        "scheduled_for": held,
        "bounces": [{k: b[k] for k in ("address", "status", "diagnostic", "at")} for b in bounces],
    }


def bounce_data(message: Message) -> dict[str, Any] | None:
    """``{original, recipients: [{address, action, status, diagnostic}]}`` for a
    bounce (``original``: the id of the outbound email it reports on, or None)."""
    if message.kind != MessageKind.BOUNCE:
        return None
    report = message.bounce or {}
    return {
        "original": message.bounce_of_id,
        "recipients": [
            {key: recipient.get(key, "") for key in ("address", "action", "status", "diagnostic")}
            for recipient in report.get("recipients", [])
        ],
    }


def waiting_detail(item: OutboxItem) -> str:
    """A queued email behind a broken connection says so plainly, instead of the last
    attempt's error: it goes once the mailbox is fixed (outbox_resume)."""
    mailbox = item.mailbox
    if mailbox.status not in (MailboxStatus.ERROR, MailboxStatus.NEEDS_REAUTH):
        return ""
    return f"Waiting: {mailbox.address} can't send until it is reconnected."
