"""What the engine reports to the people who can act on it, through hooks.

The notifications app (above the engine) registers its handlers in its
``AppConfig.ready()``; the engine never imports it (DESIGN.md section 3). A report
is a hint ("look at this mailbox", "this send ended so"): handlers read the state
themselves, so a duplicate or late report changes nothing, and a handler's failure
never breaks a sync or a send.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from uuid import UUID

log = logging.getLogger(__name__)

MailboxHandler = Callable[[UUID | str], None]
SendOutcomeHandler = Callable[[UUID | str], None]
SyncGapHandler = Callable[[UUID | str, str, int, int], None]
BounceHandler = Callable[[UUID | str], None]

_mailbox_health: list[MailboxHandler] = []
_send_outcome: list[SendOutcomeHandler] = []
_sync_gap: list[SyncGapHandler] = []
_bounce: list[BounceHandler] = []


def on_mailbox_health(handler: MailboxHandler) -> None:
    """``handler(mailbox_id)``: the mailbox's status may have changed (broke, recovered)."""
    if handler not in _mailbox_health:
        _mailbox_health.append(handler)


def on_send_outcome(handler: SendOutcomeHandler) -> None:
    """``handler(outbox_item_id)``: a send ended ``failed`` or ``unknown``."""
    if handler not in _send_outcome:
        _send_outcome.append(handler)


def on_sync_gap(handler: SyncGapHandler) -> None:
    """``handler(mailbox_id, folder_name, missing, still_missing)``: reconciliation found
    messages on the server that the sync had not stored."""
    if handler not in _sync_gap:
        _sync_gap.append(handler)


def on_bounce(handler: BounceHandler) -> None:
    """``handler(bounce_message_id)``: a delivery report was tied to the email it reports
    on (``Message.bounce_of``)."""
    if handler not in _bounce:
        _bounce.append(handler)


def _call(handlers: list[Any], *args: Any) -> None:
    for handler in list(handlers):
        try:
            handler(*args)
        except Exception:  # noqa: BLE001 - a report must never break the engine's work
            log.exception("event handler %r failed for %r", handler, args)


def report_mailbox_health(mailbox_id: UUID | str) -> None:
    _call(_mailbox_health, mailbox_id)


def report_send_outcome(item_id: UUID | str) -> None:
    _call(_send_outcome, item_id)


def report_sync_gap(mailbox_id: UUID | str, folder: str, missing: int, still_missing: int) -> None:
    _call(_sync_gap, mailbox_id, folder, missing, still_missing)


def report_bounce(bounce_message_id: UUID | str) -> None:
    _call(_bounce, bounce_message_id)
