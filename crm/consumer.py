"""The CRM as the engine's consumer of personal mail (inboxes/consumers.py, R10).

A personal mailbox's sync (INBOX and Sent) keeps exactly the mail exchanged with the
account's contacts: a contact's message to the owner, and what the owner sent a
contact from their own mail client (its copy in Sent); plus delivery reports on the
emails sent to contacts. Everything else is never stored, and neither is mail with
anyone on the owner's never-log list. The decision costs a set lookup per message:
``prepare`` does the batch's two queries (contacts, bounced originals) first."""

from __future__ import annotations

from collections.abc import Sequence

from django.db.models import Model

from crm.bounces import bounces_deliver, original_message_id, reported_originals
from crm.models import Email, TimelineEvent
from crm.parties import Exchange, contacts_logged, exchange_of
from crm.preferences import never_log_of
from crm.reply_logging import contacts_among, emails_log
from inboxes.consumers import BatchKeeps
from inboxes.mime import ParsedMessage
from inboxes.models import Mailbox, Message, MessageKind


def _exchange(own: str, parsed: ParsedMessage) -> Exchange:
    sender = parsed.from_.address if parsed.from_ else ""
    return exchange_of(own, sender, [a.address for a in (*parsed.to, *parsed.cc)])


class PersonalMailConsumer:
    models_filled_by_import: tuple[type[Model], ...] = (Email, TimelineEvent)

    def prepare(self, mailbox: Mailbox, batch: Sequence[ParsedMessage]) -> BatchKeeps:
        own = mailbox.canonical_address
        exchanges: dict[int, Exchange] = {}
        originals: set[str] = set()
        for parsed in batch:
            if parsed.kind == MessageKind.BOUNCE:
                originals.add(original_message_id(parsed.bounce))
            else:
                exchanges[id(parsed)] = _exchange(own, parsed)
        candidates = {a for exchange in exchanges.values() for a in exchange.others}
        contacts = set(contacts_among(mailbox.account_id, candidates)) if candidates else set()
        never_log = never_log_of(mailbox.owner_id) if contacts else None
        reported = reported_originals(mailbox, originals)

        def keeps(parsed: ParsedMessage) -> bool:
            if parsed.kind == MessageKind.BOUNCE:
                return original_message_id(parsed.bounce) in reported
            if never_log is None:
                return False
            exchange = exchanges.get(id(parsed)) or _exchange(own, parsed)
            return bool(contacts_logged(exchange, contacts, never_log))

        return keeps

    def keeps(self, mailbox: Mailbox, parsed: ParsedMessage) -> bool:
        return self.prepare(mailbox, [parsed])(parsed)

    def deliver(self, mailbox: Mailbox, messages: list[Message], *, backfill: bool) -> None:
        reports = [m for m in messages if m.kind == MessageKind.BOUNCE]
        mail = [m for m in messages if m.kind != MessageKind.BOUNCE]
        if mail:
            emails_log(mailbox, mail, backfill=backfill)
        if reports:
            bounces_deliver(mailbox, reports)


personal_mail_consumer = PersonalMailConsumer()
