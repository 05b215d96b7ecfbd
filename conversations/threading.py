"""Filing team-mailbox messages into conversations (DESIGN.md section 3).

A message joins the conversation that holds one of the messages it answers
(In-Reply-To, References; Outlook's Thread-Index when those are missing), as
long as its sender took part in that conversation; failing that, a recent
conversation with the same customer and subject; failing that, it opens a new
one, which goes through routing. Ingestion is idempotent: one message is in at most
one conversation per inbox (a unique constraint), so re-running changes nothing.

A sync hands over a whole batch at once. It is filed with a fixed number of
queries whatever its size: everything the rules may look at (links to the
referenced Message-IDs and Thread-Index roots, the linked conversations and
who took part in them, the customers' recent conversations) is read up front;
the messages are then filed in order in memory, exactly as if they came one at
a time (a link made earlier in the batch is the newest link), and the result is
written with bulk inserts and one UPDATE.
"""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import datetime, timedelta

from django.db import connection
from django.db.models import F, Window
from django.db.models.functions import Greatest, RowNumber
from django.utils import timezone

from conversations.contact_links import (
    contacts_by_canonical,
    conversations_link,
    customer_canonical,
    timeline_for_filed,
)
from conversations.models import (
    Conversation,
    ConversationEvent,
    ConversationMessage,
    ConversationStatus,
    EventKind,
)
from conversations.routing import conversations_route
from conversations.summary import conversation_summaries_refresh
from inboxes.models import Direction, Inbox, Message, MessageKind

SUBJECT_FALLBACK_DAYS = 14
# How many of the newest links (or recent conversations of a customer) are looked at.
CANDIDATE_LIMIT = 20
_REPLY_PREFIX = re.compile(r"^\s*((re|fw|fwd|aw|wg|sv|vs|antw|r|tr|rv)\s*(\[\d+\])?\s*:\s*)+", re.I)


def normalize_subject(subject: str) -> str:
    return " ".join(_REPLY_PREFIX.sub("", subject or "").split()).lower()


def _customer_of(message: Message, team_address: str) -> str:
    """The outside party: the sender of an inbound message, else its first recipient."""
    if message.direction == Direction.INBOUND and message.from_address.lower() != team_address:
        return message.from_address.lower()
    for recipient in message.to or []:
        address = (recipient.get("address") or "").lower()
        if address and address != team_address:
            return address
    return ""


def _people_of(sender: str, to, cc) -> set[str]:
    people = {(sender or "").lower()}
    people.update((p.get("address") or "").lower() for p in [*(to or []), *(cc or [])])
    return people


def thread_into_inbox(
    inbox: Inbox, messages: list[Message], *, backfill: bool
) -> list[Conversation]:
    """File each message into a conversation of ``inbox``; returns those it opened.

    ``backfill`` (imported history) files without reopening closed conversations
    or routing new ones.
    """
    filed = set(
        ConversationMessage.objects.filter(inbox=inbox, message__in=messages).values_list(
            "message_id", flat=True
        )
    )
    todo = []
    for message in messages:
        if message.pk not in filed:
            filed.add(message.pk)
            todo.append(message)
    if not todo:
        return []
    batch = _Batch(inbox, todo)
    for message in todo:
        batch.file(message, backfill=backfill)
    batch.save()
    # A bounce's conversation is nobody's work to route (it notifies nobody).
    conversations_route([c for c in batch.opened if not c.is_bounce], notify=not backfill)
    return batch.opened


class _Batch:
    """What the threading rules need to know about the conversations a batch may
    join, read in a few queries, and what filing the batch changes."""

    def __init__(self, inbox: Inbox, messages: list[Message]) -> None:
        self.inbox = inbox
        self.team_address = inbox.mailbox.canonical_address if inbox.mailbox is not None else ""
        self.now = timezone.now()
        # Links to a Message-ID / Thread-Index root: (newness, conversation id). Stored
        # links sort by created_at; those made in this batch come after all of them.
        self.links_by_message_id: dict[str, list[tuple]] = defaultdict(list)
        self.links_by_root: dict[str, list[tuple]] = defaultdict(list)
        self.conversations: dict = {}
        self.by_customer: dict[str, list[Conversation]] = defaultdict(list)
        # Who took part: on the stored messages (read up front for the linked
        # conversations, otherwise when a rule first asks), and on this batch's.
        self.stored_people: dict = {}
        self.batch_people: dict = defaultdict(set)
        # What filing changes: new conversations and links, how many messages each
        # conversation that already existed got, and which of those reopen.
        self.opened: list[Conversation] = []
        self.links: list[ConversationMessage] = []
        self.grown: dict = {}
        self.reopened: list = []
        # Snoozed conversations the customer wrote to again: back in the open lists.
        self.woken: list = []
        self.reopened_by_auto_reply: set = set()
        # A tied bounce (Message.bounce_of) joins the conversation of the email it reports on.
        self.conversation_of_original: dict = {}
        self._load(messages)

    # --- reading -------------------------------------------------------------------------------

    def _load(self, messages: list[Message]) -> None:
        inbox = self.inbox
        message_ids = {r for m in messages for r in (m.in_reply_to, *m.references) if r}
        if message_ids:
            for message_id, created_at, conversation_id in ConversationMessage.objects.filter(
                inbox=inbox, message__message_id__in=message_ids
            ).values_list("message__message_id", "created_at", "conversation_id"):
                self.links_by_message_id[message_id].append(((0, created_at), conversation_id))
        roots = {m.thread_root for m in messages if m.thread_root}
        if roots:
            for root, created_at, conversation_id in ConversationMessage.objects.filter(
                inbox=inbox, message__thread_root__in=roots
            ).values_list("message__thread_root", "created_at", "conversation_id"):
                self.links_by_root[root].append(((0, created_at), conversation_id))
        originals = {m.bounce_of_id for m in messages if m.bounce_of_id}
        if originals:
            self.conversation_of_original = dict(
                ConversationMessage.objects.filter(
                    inbox=inbox, message_id__in=originals
                ).values_list("message_id", "conversation_id")
            )
        linked = {
            conversation_id
            for links in (*self.links_by_message_id.values(), *self.links_by_root.values())
            for _, conversation_id in links
        } | set(self.conversation_of_original.values())
        customers = {c for c in (_customer_of(m, self.team_address) for m in messages) if c}
        if customers:
            # The subject fallback picks among a customer's most recent conversations
            # since a date: whatever a message's date, those are among the most recent
            # since the earliest date of the batch.
            earliest = min(m.sent_at or self.now for m in messages)
            most_recent_first = Window(
                RowNumber(),
                partition_by=F("customer_address"),
                order_by=F("last_message_at").desc(),
            )
            for conversation in (
                Conversation.objects.filter(
                    inbox=inbox,
                    customer_address__in=customers,
                    last_message_at__gte=earliest - timedelta(days=SUBJECT_FALLBACK_DAYS),
                )
                .annotate(recency=most_recent_first)
                .filter(recency__lte=CANDIDATE_LIMIT)
            ):
                self._know(conversation)
        unknown = linked - set(self.conversations)
        if unknown:
            for linked_conversation in Conversation.objects.filter(pk__in=unknown):
                self._know(linked_conversation)
        self._load_people(linked)

    def _know(self, conversation: Conversation) -> None:
        self.conversations[conversation.pk] = conversation
        if conversation.customer_address:
            self.by_customer[conversation.customer_address].append(conversation)

    def _load_people(self, conversation_ids) -> None:
        """Their customer and everyone on any stored message of these conversations."""
        if not conversation_ids:
            return
        for pk in conversation_ids:
            self.stored_people[pk] = {self.conversations[pk].customer_address}
        for conversation_id, sender, to, cc in Message.objects.filter(
            conversationmessage__conversation_id__in=conversation_ids
        ).values_list("conversationmessage__conversation_id", "from_address", "to", "cc"):
            self.stored_people[conversation_id] |= _people_of(sender, to, cc)

    # --- the rules -----------------------------------------------------------------------------

    def _candidates(self, keys: list[str], links_by_key: dict) -> list[Conversation]:
        """The conversations of the newest links to any of ``keys``, newest first."""
        links = sorted(
            (link for key in keys for link in links_by_key.get(key, ())),
            key=lambda link: link[0],
            reverse=True,
        )[:CANDIDATE_LIMIT]
        return [self.conversations[pk] for pk in dict.fromkeys(pk for _, pk in links)]

    def _belongs(self, conversation: Conversation, message: Message) -> bool:
        """A customer's message joins a thread only if they took part in it: people who
        answer the same newsletter each get their own conversation."""
        sender = message.from_address.lower()
        if message.direction == Direction.OUTBOUND or sender == self.team_address:
            return True
        if conversation.pk not in self.stored_people:  # joined by subject earlier in the batch
            self._load_people([conversation.pk])
        people = self.stored_people[conversation.pk] | self.batch_people[conversation.pk]
        return sender in people - {""}

    def _find_conversation(self, message: Message, when: datetime) -> Conversation | None:
        refs = [ref for ref in [message.in_reply_to, *reversed(message.references)] if ref]
        candidates = self._candidates(refs, self.links_by_message_id) if refs else []
        if not candidates and message.thread_root:
            candidates = self._candidates([message.thread_root], self.links_by_root)
        for conversation in candidates:
            if self._belongs(conversation, message):
                return conversation
        if candidates:
            return None  # an answer to a thread this sender was not part of: its own conversation
        customer = _customer_of(message, self.team_address)
        subject = normalize_subject(message.subject)
        if not customer or not subject:
            return None
        since = when - timedelta(days=SUBJECT_FALLBACK_DAYS)
        dated = [
            (c.last_message_at, c)
            for c in self.by_customer.get(customer, ())
            if c.last_message_at and c.last_message_at >= since
        ]
        dated.sort(key=lambda pair: pair[0], reverse=True)
        recent = [c for _, c in dated[:CANDIDATE_LIMIT]]
        return next((c for c in recent if normalize_subject(c.subject) == subject), None)

    def _conversation_for(self, message: Message, when: datetime) -> Conversation | None:
        """A delivery report goes only where the email it reports on is (it names no
        thread of its own: a subject or sender match would be a coincidence)."""
        if message.kind == MessageKind.BOUNCE:
            pk = self.conversation_of_original.get(message.bounce_of_id)
            return self.conversations.get(pk) if pk is not None else None
        return self._find_conversation(message, when)

    def _reopens(self, message: Message) -> bool:
        """A customer's email reopens a closed conversation; their out-of-office answer
        only where the inbox says so; a delivery report never."""
        if (
            message.direction != Direction.INBOUND
            or message.from_address.lower() == self.team_address
        ):
            return False
        if message.kind == MessageKind.AUTO_REPLY:
            return self.inbox.reopen_on_auto_reply
        return message.kind != MessageKind.BOUNCE

    def file(self, message: Message, *, backfill: bool) -> None:
        when = message.sent_at or self.now
        conversation = self._conversation_for(message, when)
        if conversation is None:
            customer = _customer_of(message, self.team_address)
            conversation = Conversation(
                account_id=self.inbox.account_id,
                inbox=self.inbox,
                subject=message.subject,
                customer_address=customer,
                customer_canonical=customer_canonical(customer),
                last_message_at=when,
                message_count=0,
                is_bounce=message.kind == MessageKind.BOUNCE,
            )
            self._know(conversation)
            self.stored_people[conversation.pk] = {conversation.customer_address}
            self.opened.append(conversation)
        elif not conversation._state.adding:  # a conversation stored before this batch
            self.grown[conversation.pk] = self.grown.get(conversation.pk, 0) + 1
        newest_link = (1, len(self.links))
        self.links.append(
            ConversationMessage(inbox=self.inbox, conversation=conversation, message=message)
        )
        if message.message_id:
            self.links_by_message_id[message.message_id].append((newest_link, conversation.pk))
        if message.thread_root:
            self.links_by_root[message.thread_root].append((newest_link, conversation.pk))
        self.batch_people[conversation.pk] |= _people_of(
            message.from_address, message.to, message.cc
        )
        conversation.message_count += 1
        conversation.last_message_at = max(conversation.last_message_at or when, when)
        if (
            self._reopens(message)
            and not backfill
            and conversation.status == ConversationStatus.CLOSED
        ):
            conversation.status = ConversationStatus.OPEN  # a customer's reply reopens it
            conversation.closed_at = None
            self.reopened.append(conversation.pk)
            if message.kind == MessageKind.AUTO_REPLY:
                self.reopened_by_auto_reply.add(conversation.pk)
        if (
            conversation.snoozed_until is not None
            and not backfill
            and not conversation._state.adding
            and self._reopens(message)
        ):
            conversation.snoozed_until = None
            self.woken.append(conversation.pk)

    # --- writing -------------------------------------------------------------------------------

    def save(self) -> None:
        # The contacts of the customers of the conversations this batch opened or grew,
        # in one query: new conversations are created linked; one that grew without a
        # contact links now, its earlier messages going on the timeline with the new.
        unlinked = [
            c
            for c in (*self.opened, *(self.conversations[pk] for pk in self.grown))
            if c.contact_id is None and c.customer_canonical
        ]
        contacts = contacts_by_canonical(
            self.inbox.account_id, {c.customer_canonical for c in unlinked}
        )
        for conversation in self.opened:
            conversation.contact = contacts.get(conversation.customer_canonical)
        Conversation.objects.bulk_create(self.opened)
        ConversationMessage.objects.bulk_create(self.links)
        unlinked_ids = {c.pk for c in unlinked}
        late = [self.conversations[pk] for pk in self.grown if pk in unlinked_ids]
        conversations_link(late, contacts)  # with the messages this batch adds to them
        late_ids = {c.pk for c in late}
        timeline_for_filed(
            [link for link in self.links if link.conversation.pk not in late_ids],
            inbox_name=self.inbox.name,
        )
        self._save_grown()
        ConversationEvent.objects.bulk_create(
            ConversationEvent(
                conversation_id=pk,
                kind=EventKind.REOPENED,
                detail=(
                    {"reason": "an automatic reply came in", "auto_reply": True}
                    if pk in self.reopened_by_auto_reply
                    else {"reason": "the customer wrote again"}
                ),
            )
            for pk in self.reopened
        )
        if self.woken:
            Conversation.objects.filter(pk__in=self.woken).update(snoozed_until=None)
            ConversationEvent.objects.bulk_create(
                ConversationEvent(
                    conversation_id=pk,
                    kind=EventKind.WOKE,
                    detail={"reason": "the customer wrote again"},
                )
                for pk in self.woken
            )
        conversation_summaries_refresh([*(c.pk for c in self.opened), *self.grown])

    def _save_grown(self) -> None:
        """Add to the counters of the conversations that existed: relative to what is
        stored now, as another worker may be filing into the same conversation."""
        if not self.grown:
            return
        rows = [
            (pk, count, self.conversations[pk].last_message_at, pk in self.reopened)
            for pk, count in self.grown.items()
        ]
        if connection.vendor != "postgresql":
            for pk, count, latest, reopen in rows:
                reopening = {"status": ConversationStatus.OPEN, "closed_at": None}
                Conversation.objects.filter(pk=pk).update(
                    message_count=F("message_count") + count,
                    last_message_at=Greatest(F("last_message_at"), latest),
                    updated_at=self.now,
                    **(reopening if reopen else {}),
                )
            return
        values = ", ".join(["(%s::uuid, %s::integer, %s::timestamptz, %s::boolean)"] * len(rows))
        table = Conversation._meta.db_table
        with connection.cursor() as cursor:
            cursor.execute(  # the table name comes from the model, values are parameters
                f"""UPDATE {table} AS c SET
                        message_count = c.message_count + v.count,
                        last_message_at = GREATEST(c.last_message_at, v.latest),
                        status = CASE WHEN v.reopen THEN %s ELSE c.status END,
                        closed_at = CASE WHEN v.reopen THEN NULL ELSE c.closed_at END,
                        updated_at = %s
                    FROM (VALUES {values}) AS v(id, count, latest, reopen)
                    WHERE c.id = v.id""",  # noqa: S608
                [ConversationStatus.OPEN, self.now, *(p for row in rows for p in row)],
            )
