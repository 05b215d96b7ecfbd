"""R7 by address: an admin frees every hold a deactivated user has on one address.

A deactivated user may hold an address as a personal email (a mailbox), through a
tool above the engine (the meetings tool, through ``inboxes/holds.py``), or both.
``mailbox_release`` frees a mailbox and the owner's tool holds on its address; this
frees an address a user holds through a tool only, which has no mailbox to release.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from accounts.models import User
from accounts.services import account_lock
from audit.services import audit_refusals
from core.errors import Invalid
from inboxes import holds, rules, services
from inboxes.addresses import canonical_address
from inboxes.holds import HELD_AS_PERSONAL
from inboxes.models import Mailbox, MailboxKind, MailboxStatus


def user_address_release(
    *, actor: User, user: User, address: str, ip: str | None = None
) -> list[dict[str, Any]]:
    """Free, in one step and one transaction, every hold ``user`` (deactivated) has on
    ``address``; each release is audited. Returns what was released:
    ``[{"held_as": "personal", "mailbox": id}, {"held_as": "meetings"}]``."""
    address = (address or "").strip()
    canonical = canonical_address(address)
    with audit_refusals(actor=actor, action="address.release_refused", target_repr=address, ip=ip):
        rules.check_user_release(actor=actor, user=user)
    with transaction.atomic():
        account_lock(actor.account_id)
        released: list[dict[str, Any]] = [
            {"held_as": holder.held_as}
            for holder in holds.tool_holders(account_id=user.account_id, canonical=canonical)
            if holder.user_id == user.pk
        ]
        mailboxes = Mailbox.objects.filter(
            account_id=user.account_id,
            owner=user,
            kind=MailboxKind.PERSONAL,
            canonical_address=canonical,
        ).exclude(status=MailboxStatus.DISCONNECTED)
        for mailbox in mailboxes.select_related("owner", "account"):
            # Frees the owner's tool holds on the address too.
            services.mailbox_release(actor=actor, mailbox=mailbox, ip=ip)
            released.insert(0, {"held_as": HELD_AS_PERSONAL, "mailbox": str(mailbox.pk)})
        holds.release_tool_holds(user=user, canonical=canonical, actor=actor, ip=ip)
        if not released:
            raise Invalid(
                f"{user.display_name} does not hold {address}.",
                errors={"address": [f"{user.display_name} does not hold this address."]},
            )
    return released
