"""An admin changes a personal mailbox's send limits (DESIGN.md 4: ``send_limits``).

The limits themselves, their defaults and how the outbox keeps to them are in
``inboxes/outbox/limits.py``.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from accounts.models import User
from audit.services import audit_record, audit_refusals
from core.errors import Invalid
from inboxes import rules
from inboxes.models import Mailbox, MailboxKind
from inboxes.outbox.enqueue import enqueue_send_run
from inboxes.outbox.limits import limits_of, release_held

# Far above any provider's published limit: a typo is refused, a real limit is not.
MAX_PER_DAY = 1_000_000
MAX_PER_MINUTE = 10_000

_UNSET: Any = object()


def check_may_set_send_limits(actor: User, mailbox: Mailbox, *, ip: str | None = None) -> None:
    """Admins only (a refusal is audited), personal emails only, while connected."""
    with audit_refusals(
        actor=actor, action="mailbox.send_limits_refused", target_repr=mailbox.address, ip=ip
    ):
        rules.check_admin(actor, "change send limits")
    if mailbox.kind != MailboxKind.PERSONAL:
        raise Invalid(
            "Team emails have no send limits; only personal emails do.",
            errors={"send_limits": ["Only personal emails have send limits."]},
        )
    if not mailbox.is_connected:
        raise Invalid("This mailbox is disconnected; connect it again first.")


def mailbox_set_send_limits(
    *,
    actor: User,
    mailbox: Mailbox,
    per_day: int | None = _UNSET,
    per_minute: int | None = _UNSET,
    ip: str | None = None,
) -> Mailbox:
    """Set (a number) or reset to the provider's default (None) either limit; a limit
    left out keeps its value. Admins only. Held emails are released to be judged
    again at once: a raised limit sends them now, a lowered one holds them longer."""
    check_may_set_send_limits(actor, mailbox, ip=ip)
    errors: dict[str, list[str]] = {}
    for name, value, top in (
        ("per_day", per_day, MAX_PER_DAY),
        ("per_minute", per_minute, MAX_PER_MINUTE),
    ):
        if value is _UNSET or value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
            errors[name] = [f"Enter a whole number from 1 to {top:,}, or leave it empty."]
    if errors:
        raise Invalid("Check the send limits.", errors={"send_limits": errors})
    before = limits_of(mailbox)
    with transaction.atomic():
        mailbox = Mailbox.objects.select_for_update().get(pk=mailbox.pk)
        if per_day is not _UNSET:
            mailbox.send_limit_per_day = per_day
        if per_minute is not _UNSET:
            mailbox.send_limit_per_minute = per_minute
        mailbox.save(update_fields=["send_limit_per_day", "send_limit_per_minute", "updated_at"])
        after = limits_of(mailbox)
        audit_record(
            account=mailbox.account,
            actor=actor,
            action="mailbox.send_limits_changed",
            target=mailbox,
            ip=ip,
            data={
                "before": before.as_dict() if before else None,
                "after": after.as_dict() if after else None,
            },
        )
        if release_held(mailbox.pk):
            mailbox_id = mailbox.pk
            transaction.on_commit(lambda: enqueue_send_run(mailbox_id))
    return mailbox
