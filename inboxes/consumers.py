"""Who gets the mail a sync brings in.

Team mailboxes feed their conversations inbox. Personal mailboxes feed the CRM,
which stores only mail exchanged with its contacts (DESIGN.md section 3): it
registers a ``PersonalMailConsumer`` here; until one is registered nothing from
personal mailboxes is kept beyond the sync ledger's keys (and copies of mail
Postkamer sent itself, which it already holds).
"""

from __future__ import annotations

from typing import Protocol

from conversations.models import Message
from inboxes.models import Mailbox, MailboxKind
from inboxes.parsing import ParsedMessage


class PersonalMailConsumer(Protocol):
    def keeps(self, mailbox: Mailbox, parsed: ParsedMessage) -> bool: ...

    def deliver(self, mailbox: Mailbox, messages: list[Message], *, backfill: bool) -> None: ...


personal_mail_consumers: list[PersonalMailConsumer] = []


def register_personal_mail_consumer(consumer: PersonalMailConsumer) -> None:
    if consumer not in personal_mail_consumers:
        personal_mail_consumers.append(consumer)


def keeps(mailbox: Mailbox, parsed: ParsedMessage) -> bool:
    if mailbox.kind == MailboxKind.TEAM:
        return True
    return any(consumer.keeps(mailbox, parsed) for consumer in personal_mail_consumers)


def deliver(mailbox: Mailbox, messages: list[Message], *, backfill: bool) -> None:
    if not messages:
        return
    if mailbox.kind == MailboxKind.TEAM:
        from conversations.models import Inbox
        from conversations.threading import thread_into_inbox

        inbox = Inbox.objects.filter(mailbox=mailbox).select_related("mailbox").first()
        if inbox is not None:
            thread_into_inbox(inbox, messages, backfill=backfill)
        return
    for consumer in personal_mail_consumers:
        consumer.deliver(mailbox, messages, backfill=backfill)
