"""The exclusivity rules R1-R8 (DESIGN.md section 2), in one place.

Pure checks: each reads the database and raises one domain error, or returns.
The web UI, the API and the workers all reach them through inboxes/services.py
and meetings/services.py, which run them twice: once before slow work (the
connection test) for a quick answer, and again inside the transaction that
writes, under a lock on the account row. The database constraints on
Mailbox (one connected canonical address per account) and Inbox.mailbox
(one-to-one) back R1-R3 so that even a check that races still cannot win twice.

Where each rule is enforced:
  R1 personal is personal      check_mailbox_connect + Mailbox unique constraint
  R2 one use per address       check_mailbox_connect + Mailbox unique constraint
  R3 one inbox per team address check_inbox_attach + Inbox.mailbox one-to-one
  R4 conversations excl. meetings check_inbox_attach, check_meetings_connect,
                               check_mailbox_connect (meetings holder)
  R5 inboxes by plan           check_inbox_create
  R6 conflicts explain themselves  find_address_holder + conflict_for
  R7 orphans can be released   check_release, check_transfer_to_user, check_convert_to_team,
                               check_user_release (a deactivated user's holds on an address,
                               tools included; see inboxes/holds.py)
  R8 team mail is team-visible check_team_connect
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from accounts.models import Account, User
from core.errors import (
    AddressInUse,
    Invalid,
    PermissionDeniedError,
    PlanLimitReached,
    TeamAddressInConversations,
    TeamAddressInOtherInbox,
)
from inboxes import holds
from inboxes.holds import HELD_AS_MEETINGS, HELD_AS_PERSONAL, HELD_AS_TEAM, Holder
from inboxes.models import Inbox, Mailbox, MailboxKind, MailboxStatus


def personal_owner(mailbox: Mailbox) -> User:
    """The owner of a personal mailbox, which always has one (the check constraint
    personal_has_owner_team_has_none)."""
    owner = mailbox.owner
    if owner is None:
        raise ValueError(f"Mailbox {mailbox.pk} has no owner: it is not a personal one.")
    return owner


def find_address_holder(
    *,
    account_id: Any,
    canonical: str,
    ignore_mailbox_id: Any = None,
    ignore_meetings_user_id: Any = None,
) -> Holder | None:
    """The connected mailbox or meetings connection holding ``canonical``, if any."""
    mailboxes = Mailbox.objects.filter(account_id=account_id, canonical_address=canonical).exclude(
        status=MailboxStatus.DISCONNECTED
    )
    if ignore_mailbox_id is not None:
        mailboxes = mailboxes.exclude(pk=ignore_mailbox_id)
    mailbox = mailboxes.select_related("owner").first()
    if mailbox is not None:
        if mailbox.kind == MailboxKind.PERSONAL:
            owner = personal_owner(mailbox)
            return Holder(
                held_as=HELD_AS_PERSONAL,
                holder_type="user",
                holder_id=mailbox.owner_id,
                holder_name=owner.display_name,
                holder_is_active=owner.is_active,
                user_id=mailbox.owner_id,
                mailbox_id=mailbox.pk,
            )
        inbox = Inbox.objects.filter(mailbox=mailbox).first()
        return Holder(
            held_as=HELD_AS_TEAM,
            holder_type="inbox" if inbox else None,
            holder_id=inbox.pk if inbox else None,
            holder_name=inbox.name if inbox else "",
            holder_is_active=True,
            user_id=None,
            mailbox_id=mailbox.pk,
        )
    return holds.tool_holder(
        account_id=account_id, canonical=canonical, ignore_user_id=ignore_meetings_user_id
    )


def may_see_holder(viewer: User, holder: Holder) -> bool:
    """R6: holders are named only to admins and to the holder."""
    return viewer.is_admin or (holder.user_id is not None and holder.user_id == viewer.pk)


def conflict_for(holder: Holder, *, address: str, viewer: User) -> dict[str, Any]:
    conflict: dict[str, Any] = {"address": address, "held_as": holder.held_as}
    if may_see_holder(viewer, holder):
        conflict["holder"] = (
            {
                "type": holder.holder_type,
                "id": str(holder.holder_id),
                "name": holder.holder_name,
                "is_active": holder.holder_is_active,
            }
            if holder.holder_type
            else None
        )
        conflict["description"] = holder.describe()
        if holder.mailbox_id is not None:
            conflict["mailbox"] = str(holder.mailbox_id)
    return conflict


def address_in_use(holder: Holder, *, address: str, viewer: User) -> AddressInUse:
    if may_see_holder(viewer, holder):
        detail = f"{address} is already {holder.describe()}."
        if holder.user_id == viewer.pk and holder.held_as == HELD_AS_PERSONAL:
            detail = f"You have already connected {address}."
    else:
        detail = f"{address} is already in use in your account. An admin can tell you where."
    return AddressInUse(detail, conflict=conflict_for(holder, address=address, viewer=viewer))


# --- Mailboxes ---------------------------------------------------------------


def check_team_connect(*, actor: User, acknowledge_team_visibility: bool) -> None:
    """Team emails are admin-only, and R8: everyone on the team reads them."""
    if not actor.is_admin:
        raise PermissionDeniedError("Only an account admin can connect a team email.")
    if not acknowledge_team_visibility:
        raise Invalid(
            "All incoming mail to a team email is visible to the whole team. "
            "Confirm this before connecting it, and never connect an address used for private mail.",
            errors={
                "acknowledge_team_visibility": [
                    "Confirm that all incoming mail will be visible to the whole team."
                ]
            },
        )


def check_mailbox_connect(
    *, actor: User, canonical: str, address: str, kind: str, acknowledge_team_visibility: bool
) -> None:
    """R1, R2, R4 (reverse) and R8 for connecting ``address`` as ``kind``."""
    if kind == MailboxKind.TEAM:
        check_team_connect(actor=actor, acknowledge_team_visibility=acknowledge_team_visibility)
    holder = find_address_holder(account_id=actor.account_id, canonical=canonical)
    if holder is None:
        return
    own_meetings_address = (
        holder.held_as == HELD_AS_MEETINGS
        and kind == MailboxKind.PERSONAL
        and holder.user_id == actor.pk
    )
    if own_meetings_address:
        return  # a user's own personal email with the meetings tool is the normal case
    raise address_in_use(holder, address=address, viewer=actor)


def check_inbox_attach(*, inbox: Inbox, mailbox: Mailbox, viewer: User) -> None:
    """R3 (one inbox per team address) and R4 (not also the meetings tool)."""
    if mailbox.account_id != inbox.account_id:
        raise Invalid("Unknown mailbox.", errors={"mailbox": ["Unknown mailbox."]})
    if mailbox.kind != MailboxKind.TEAM:
        raise Invalid(
            "Only a team email can feed a conversations inbox.",
            errors={"mailbox": ["This is a personal email, not a team email."]},
        )
    if not mailbox.is_connected:
        raise Invalid(
            "This team email is disconnected.",
            errors={"mailbox": ["This team email is disconnected."]},
        )
    if inbox.mailbox_id is not None and inbox.mailbox_id != mailbox.pk:
        check_inbox_has_room(inbox=inbox)
    other = Inbox.objects.filter(mailbox=mailbox).exclude(pk=inbox.pk).first()
    if other is not None:
        raise TeamAddressInOtherInbox(
            f"{mailbox.address} is already the team email of inbox {other.name}. "
            "Disconnect it there first.",
            inbox={"id": str(other.pk), "name": other.name},
        )
    check_not_meetings_address(
        account_id=mailbox.account_id,
        canonical=mailbox.canonical_address,
        address=mailbox.address,
        viewer=viewer,
    )


def check_inbox_has_room(*, inbox: Inbox) -> None:
    """An inbox is fed by one team email; replacing it means disconnecting the old one."""
    current = Inbox.objects.filter(pk=inbox.pk).values_list("mailbox__address", flat=True).first()
    if current:
        raise Invalid(
            f"Inbox {inbox.name} already has the team email {current}. Disconnect it first.",
            errors={"inbox": ["This inbox already has a team email."]},
        )


def check_not_meetings_address(
    *, account_id: Any, canonical: str, address: str, viewer: User, ignore_user_id: Any = None
) -> None:
    """R4; ``ignore_user_id``: a deactivated owner whose own hold is released with the move."""
    holder = holds.tool_holder(
        account_id=account_id, canonical=canonical, ignore_user_id=ignore_user_id
    )
    if holder is None:
        return
    raise TeamAddressInConversations(
        f"{address} is used by the {holder.describe()}; a team email in the conversations "
        "tool cannot also be used for meetings.",
        conflict=conflict_for(holder, address=address, viewer=viewer),
    )


def check_inbox_create(*, account: Account) -> None:
    """R5: conversations inboxes up to the plan's limit (a setting)."""
    limit = settings.PLAN_INBOX_LIMITS.get(account.plan, 0)
    count = Inbox.objects.filter(account=account).count()
    if count >= limit:
        raise PlanLimitReached(
            f"Your {account.plan} plan allows {limit} conversations inbox"
            f"{'es' if limit != 1 else ''}. Upgrade the plan to create more.",
            limit=limit,
        )


# --- Meetings ----------------------------------------------------------------


def check_meetings_connect(*, user: User, canonical: str, address: str) -> None:
    """R4: a team email cannot be the meetings tool's; R1: nor another user's email."""
    holder = find_address_holder(
        account_id=user.account_id, canonical=canonical, ignore_meetings_user_id=user.pk
    )
    if holder is None:
        return
    if holder.held_as == HELD_AS_PERSONAL and holder.user_id == user.pk:
        return
    if holder.held_as == HELD_AS_TEAM:
        raise TeamAddressInConversations(
            f"{address} is a team email used by the conversations tool; "
            "it cannot also be connected to the meetings tool.",
            conflict=conflict_for(holder, address=address, viewer=user),
        )
    raise address_in_use(holder, address=address, viewer=user)


# --- Orphans (R7) -----------------------------------------------------------------


def check_admin(actor: User, action: str) -> None:
    if not actor.is_admin:
        raise PermissionDeniedError(f"Only an account admin can {action}.")


def check_may_manage(actor: User, mailbox: Mailbox, action: str) -> None:
    """A personal email is managed by its owner; a team email by admins."""
    if mailbox.kind == MailboxKind.PERSONAL and mailbox.owner_id == actor.pk:
        return
    if mailbox.kind == MailboxKind.TEAM and actor.is_admin:
        return
    raise PermissionDeniedError(
        f"Only the owner can {action} a personal email."
        if mailbox.kind == MailboxKind.PERSONAL
        else f"Only an account admin can {action} a team email."
    )


def check_orphaned(mailbox: Mailbox) -> None:
    if not mailbox.is_connected:
        raise Invalid("This mailbox is already disconnected.")
    if mailbox.kind != MailboxKind.PERSONAL:
        raise Invalid("Only a personal email can be released or transferred.")
    owner = personal_owner(mailbox)
    if owner.is_active:
        raise Invalid(
            f"{owner.display_name} is active: only they can disconnect {mailbox.address}, "
            "or deactivate them first."
        )


def check_release(*, actor: User, mailbox: Mailbox) -> None:
    check_admin(actor, "release an address")
    check_orphaned(mailbox)


def check_transfer_to_user(*, actor: User, mailbox: Mailbox, to_user: User) -> None:
    check_admin(actor, "transfer a mailbox")
    check_orphaned(mailbox)
    if to_user.account_id != mailbox.account_id:
        raise Invalid("Unknown user.", errors={"user": ["Unknown user."]})
    if not to_user.is_active:
        raise Invalid(
            f"{to_user.display_name} is deactivated.",
            errors={"user": ["This user is deactivated."]},
        )
    for holder in holds.tool_holders(
        account_id=mailbox.account_id,
        canonical=mailbox.canonical_address,
        ignore_user_id=to_user.pk,
    ):
        if holder.user_id != mailbox.owner_id:  # the owner's own holds are released with it
            raise address_in_use(holder, address=mailbox.address, viewer=actor)


def check_convert_to_team(
    *, actor: User, mailbox: Mailbox, inbox: Inbox, acknowledge_team_visibility: bool
) -> None:
    check_team_connect(actor=actor, acknowledge_team_visibility=acknowledge_team_visibility)
    check_orphaned(mailbox)
    if inbox.account_id != mailbox.account_id:
        raise Invalid("Unknown inbox.", errors={"inbox": ["Unknown inbox."]})
    if inbox.mailbox_id is not None and inbox.mailbox_id != mailbox.pk:
        check_inbox_has_room(inbox=inbox)
    check_not_meetings_address(
        account_id=mailbox.account_id,
        canonical=mailbox.canonical_address,
        address=mailbox.address,
        viewer=actor,
        ignore_user_id=mailbox.owner_id,  # the owner's own holds are released with it
    )


def check_user_release(*, actor: User, user: User) -> None:
    """R7 for every hold a user has on an address (mailboxes and tools alike)."""
    check_admin(actor, "release an address")
    if user.account_id != actor.account_id:
        raise Invalid("Unknown user.", errors={"user": ["Unknown user."]})
    if user.is_active:
        raise Invalid(
            f"{user.display_name} is active: only they can disconnect their addresses, "
            "or deactivate them first."
        )
