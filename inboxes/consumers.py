"""Who gets the mail a sync brings in: the products above the engine.

Team mailboxes feed their conversations inbox; personal mailboxes feed the CRM,
which stores only mail exchanged with its contacts (DESIGN.md section 3). Each
product registers a ``MailConsumer`` for the kind of mailbox it serves, in its
``AppConfig.ready()``; the engine never imports them. Until a consumer of a kind is
registered, nothing from mailboxes of that kind is kept beyond the sync ledger's
keys (and copies of mail Postkamer sent itself, which it already holds).

Deciding "keep?" runs for every message a sync fetches, so it must not cost a query
per message: a consumer may offer ``prepare(mailbox, batch)``, called once per batch
before any message of it is decided, which does the batch's queries and returns the
batch's own ``keeps`` (a set lookup per message). A consumer without it is asked
``keeps`` per message.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Protocol

from django.db.models import Model

from inboxes.models import Mailbox, Message

if TYPE_CHECKING:
    from inboxes.mime import ParsedMessage


class MailConsumer(Protocol):
    # The consumer's tables that a first import fills: their planner statistics are
    # refreshed along with the engine's own (inboxes/sync/folders.py).
    models_filled_by_import: tuple[type[Model], ...]

    def keeps(self, mailbox: Mailbox, parsed: ParsedMessage) -> bool: ...

    def deliver(self, mailbox: Mailbox, messages: list[Message], *, backfill: bool) -> None: ...


# Whether one message of a prepared batch is kept.
BatchKeeps = Callable[["ParsedMessage"], bool]


class BatchPreparingConsumer(MailConsumer, Protocol):
    """A consumer that decides a whole batch with a few queries (see the module's doc)."""

    def prepare(self, mailbox: Mailbox, batch: Sequence[ParsedMessage]) -> BatchKeeps: ...


mail_consumers: dict[str, list[MailConsumer]] = {}


def register_mail_consumer(kind: str, consumer: MailConsumer) -> None:
    """``kind`` is a ``MailboxKind``: the mailboxes whose mail ``consumer`` receives."""
    registered = mail_consumers.setdefault(kind, [])
    if consumer not in registered:
        registered.append(consumer)


def unregister_mail_consumer(kind: str, consumer: MailConsumer) -> None:
    registered = mail_consumers.get(kind, [])
    if consumer in registered:
        registered.remove(consumer)


def keeps(mailbox: Mailbox, parsed: ParsedMessage) -> bool:
    return any(consumer.keeps(mailbox, parsed) for consumer in mail_consumers.get(mailbox.kind, []))


def batch_keeps(mailbox: Mailbox, batch: Sequence[ParsedMessage]) -> BatchKeeps:
    """Whether each message of ``batch`` is kept by a consumer of ``mailbox``'s kind:
    each consumer prepares once for the whole batch, then answers per message."""
    deciders: list[BatchKeeps] = []
    for consumer in mail_consumers.get(mailbox.kind, []):
        prepare = getattr(consumer, "prepare", None)
        if prepare is not None:
            deciders.append(prepare(mailbox, batch))
        else:
            deciders.append(partial(consumer.keeps, mailbox))
    if len(deciders) == 1:
        return deciders[0]
    return lambda parsed: any(decide(parsed) for decide in deciders)


def deliver(mailbox: Mailbox, messages: list[Message], *, backfill: bool) -> None:
    if not messages:
        return
    for consumer in mail_consumers.get(mailbox.kind, []):
        consumer.deliver(mailbox, messages, backfill=backfill)


def models_filled_by_import() -> list[type[Model]]:
    found: list[type[Model]] = []
    for registered in mail_consumers.values():
        for consumer in registered:
            models = getattr(consumer, "models_filled_by_import", ())
            found.extend(m for m in models if m not in found)
    return found
