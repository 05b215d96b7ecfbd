"""The questions asked before the engine's destructive actions (core/confirm.py):
disconnecting, releasing and transferring an address, deactivating a user."""

from __future__ import annotations

from django.urls import reverse

from accounts.models import User
from core.confirm import Confirmation
from inboxes.models import Mailbox, MailboxKind, OutboxItem, OutboxState


def _waiting(mailbox: Mailbox) -> str:
    count = OutboxItem.objects.filter(mailbox=mailbox, state=OutboxState.QUEUED).count()
    if not count:
        return ""
    return f" {count:,} email{'' if count == 1 else 's'} waiting to be sent will not go out."


def disconnect_question(mailbox: Mailbox) -> Confirmation:
    inbox = getattr(mailbox, "inbox", None) if mailbox.kind == MailboxKind.TEAM else None
    feeds = f" Inbox {inbox.name} stops receiving its mail." if inbox is not None else ""
    return Confirmation(
        title=f"Disconnect {mailbox.address}?",
        lost=(
            f"New mail to {mailbox.address} will no longer arrive here and nothing more is "
            f"sent from it.{feeds}{_waiting(mailbox)} The mail already imported is kept."
        ),
        button=f"Disconnect {mailbox.address}",
        cancel_url=reverse("settings-mailbox", args=[mailbox.pk]),
    )


def release_question(mailbox: Mailbox) -> Confirmation:
    owner = mailbox.owner.display_name if mailbox.owner else "its owner"
    return Confirmation(
        title=f"Release {mailbox.address}?",
        lost=(
            f"{mailbox.address} is disconnected from {owner}'s account (and from any tool "
            f"using it), so anyone can connect it again.{_waiting(mailbox)} "
            "The mail already imported is kept."
        ),
        button=f"Release {mailbox.address}",
        cancel_url=reverse("settings-users"),
    )


def transfer_question(mailbox: Mailbox, target: str) -> Confirmation:
    return Confirmation(
        title=f"Transfer {mailbox.address} to {target}?",
        lost=(
            f"{mailbox.address} and its history move to {target}; "
            f"{mailbox.owner.display_name if mailbox.owner else 'its owner'} keeps nothing "
            "of it."
        ),
        button="Transfer",
        cancel_url=reverse("settings-users"),
        carry=("next", "target", "acknowledge_team_visibility"),
    )


def address_release_question(user: User, address: str) -> Confirmation:
    return Confirmation(
        title=f"Release {address}?",
        lost=(
            f"{address} is taken away from {user.display_name}'s tools (such as the "
            "meetings tool), so anyone can connect it again."
        ),
        button=f"Release {address}",
        cancel_url=reverse("settings-users"),
        carry=("next", "address"),
    )


def deactivate_question(user: User) -> Confirmation:
    return Confirmation(
        title=f"Deactivate {user.display_name}?",
        lost=(
            f"{user.display_name} ({user.email}) can no longer sign in, their API tokens stop "
            "working and their open conversations go back to routing. Their personal emails "
            "stay connected until you release or transfer them; reactivating undoes this."
        ),
        button=f"Deactivate {user.display_name}",
        cancel_url=reverse("settings-users"),
    )
