"""The one guard for mail the product sends on its own (RFC 3834's rules against
loops): notifications, booking invitations and cancellations, acknowledgements,
sequence steps - anything no person pressed "Send" for.

``may_send_automatically(account, address, in_answer_to=...)`` refuses:

* an answer to a delivery report or to an automatic reply (an auto-reply answering
  an auto-reply is how two responders loop for ever);
* addresses that say no one reads them: noreply / no-reply / donotreply,
  mailer-daemon, postmaster (RFC 5321's and a bounce's senders);
* the account's own connected addresses (a notification sent to the team address
  would come back in as a new conversation, and notify again).

Every automatic send calls it first and skips the recipient when it answers False
(``automatic_send_refusal`` says why, for the log). Messages the product composes on
its own carry ``Auto-Submitted: auto-generated`` (inboxes/outbox/compose.py
``build_mime(automatic=True)``; core/mail.py for the product's own mail), so a
well-behaved responder on the other side never answers them either.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from uuid import UUID

from inboxes.addresses import InvalidAddress, canonical_address
from inboxes.models import Mailbox, MailboxStatus, Message, MessageKind

if TYPE_CHECKING:
    from accounts.models import Account

# Local parts (before any +tag or -suffix) that no person reads.
_UNREAD_LOCAL = re.compile(
    r"^(?:no[-_.]?reply|do[-_.]?not[-_.]?reply|mailer[-_.]?daemon|postmaster|bounces?)"
    r"(?:$|[-_.+])"
)


def automatic_send_refusal(
    account: Account | UUID | str, address: str, *, in_answer_to: Message | None = None
) -> str | None:
    """Why nothing automatic may go to ``address`` (None: it may)."""
    if in_answer_to is not None:
        if in_answer_to.kind == MessageKind.BOUNCE:
            return "it would answer a delivery report"
        if in_answer_to.kind == MessageKind.AUTO_REPLY:
            return "it would answer an automatic reply"
    try:
        canonical = canonical_address(address)
    except InvalidAddress:
        return "the address is not valid"
    if _UNREAD_LOCAL.match(canonical.split("@", 1)[0]):
        return "nobody reads that address"
    account_id: UUID | str = account.pk if hasattr(account, "pk") else account
    own = (
        Mailbox.objects.filter(account_id=account_id, canonical_address=canonical)
        .exclude(status=MailboxStatus.DISCONNECTED)
        .exists()
    )
    if own:
        return "it is one of the account's own connected addresses"
    return None


def may_send_automatically(
    account: Account | UUID | str, address: str, *, in_answer_to: Message | None = None
) -> bool:
    return automatic_send_refusal(account, address, in_answer_to=in_answer_to) is None
