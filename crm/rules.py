"""The CRM's checks: pure functions, called by the API, the pages and the workers alike."""

from __future__ import annotations

from accounts.models import User
from core.errors import Invalid, NotFoundError
from inboxes.models import Mailbox, MailboxKind, MailboxStatus


def check_send_mailbox(user: User, mailbox: Mailbox | None) -> Mailbox:
    """A one-to-one email goes from one of the sender's own connected personal
    mailboxes (DESIGN.md 4): a team mailbox is ``invalid``; someone else's, or another
    account's, is ``not_found``."""
    if mailbox is None or mailbox.account_id != user.account_id:
        raise NotFoundError("No such mailbox.")
    if mailbox.kind != MailboxKind.PERSONAL:
        raise Invalid(
            "A one-to-one email is sent from one of your personal mailboxes, not a team one.",
            errors={"mailbox": ["Pick one of your personal mailboxes."]},
        )
    if mailbox.owner_id != user.pk:
        raise NotFoundError("No such mailbox.")
    if mailbox.status == MailboxStatus.DISCONNECTED:
        raise Invalid(
            "This mailbox is disconnected: connect it again, or pick another.",
            errors={"mailbox": ["Disconnected."]},
        )
    return mailbox
