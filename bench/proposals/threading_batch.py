"""Prototype, for measuring only: thread a whole ingest batch with a handful of queries.

    .venv/bin/python bench/sync.py --patch bench/proposals/threading_batch.py

Not product code: it replaces ``conversations.threading.thread_into_inbox`` in
the benchmark's sync process only, to size the gain of the patch proposed in
bench/README.md. Today the function costs about 4 queries per message (the
reference lookup or the subject-fallback lookup, Conversation INSERT,
ConversationMessage INSERT, Conversation UPDATE). This version, with the same
rules (written against threading.py as of 2026-11-28 07:00: reference links,
then Thread-Index root, a sender must have taken part in the thread, then the
subject fallback), does per batch: one lookup of every referenced Message-ID,
one of every Thread-Index root, one of the participants of every linked
conversation, one of the subject-fallback candidates of every customer in the
batch, one bulk INSERT of the new conversations, one of the links, and one
UPDATE ... FROM (VALUES) for the counters of the conversations that already
existed. Messages of the
same batch that answer each other are resolved in memory, in order.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta

from django.db import connection
from django.utils import timezone

from conversations import threading as threading_module
from conversations.models import (
    Conversation,
    ConversationMessage,
    ConversationStatus,
    Direction,
    Message,
)
from conversations.routing import conversation_route

_normalize = threading_module.normalize_subject
_customer_of = threading_module._customer_of
FALLBACK = timedelta(days=threading_module.SUBJECT_FALLBACK_DAYS)


def _people(sender, to, cc) -> set[str]:
    people = {(sender or "").lower()}
    people.update((p.get("address") or "").lower() for p in [*(to or []), *(cc or [])])
    return people


def thread_into_inbox(inbox, messages, *, backfill):
    already = set(
        ConversationMessage.objects.filter(inbox=inbox, message__in=messages).values_list(
            "message_id", flat=True
        )
    )
    team_address = inbox.mailbox.canonical_address if inbox.mailbox_id else ""
    todo = []
    for message in messages:
        if message.pk not in already:
            already.add(message.pk)
            todo.append(message)
    if not todo:
        return []
    now = timezone.now()

    # Every link to a referenced Message-ID or Thread-Index root, in one query each:
    # (created_at, conversation_id), newest first.
    wanted_refs = {r for m in todo for r in (m.in_reply_to, *m.references) if r}
    ref_links: dict[str, list] = defaultdict(list)
    if wanted_refs:
        for message_id, created_at, cid in ConversationMessage.objects.filter(
            inbox=inbox, message__message_id__in=wanted_refs
        ).values_list("message__message_id", "created_at", "conversation_id"):
            ref_links[message_id].append((created_at, cid))
    roots = {getattr(m, "thread_root", "") for m in todo} - {""}
    root_links: dict[str, list] = defaultdict(list)
    if roots:
        for root, created_at, cid in ConversationMessage.objects.filter(
            inbox=inbox, message__thread_root__in=roots
        ).values_list("message__thread_root", "created_at", "conversation_id"):
            root_links[root].append((created_at, cid))

    # Subject-fallback candidates of every customer in the batch, in one query.
    customers = {c for c in (_customer_of(m, team_address) for m in todo) if c}
    oldest = min((m.sent_at or now) for m in todo) - FALLBACK
    conversations: dict = {}
    by_customer: dict[str, list] = defaultdict(list)
    if customers:
        for c in Conversation.objects.filter(
            inbox=inbox, customer_address__in=customers, last_message_at__gte=oldest
        ):
            conversations[c.pk] = c
            by_customer[c.customer_address].append(c)
    linked = {cid for links in (*ref_links.values(), *root_links.values()) for _, cid in links}
    needed = linked - set(conversations)
    if needed:
        for c in Conversation.objects.filter(pk__in=needed):
            conversations[c.pk] = c
    # Who took part in each linked conversation, in one query.
    participants: dict = defaultdict(set)
    for c in linked:
        participants[c].add(conversations[c].customer_address)
    if linked:
        for cid, sender, to, cc in Message.objects.filter(
            conversationmessage__conversation_id__in=linked
        ).values_list("conversationmessage__conversation_id", "from_address", "to", "cc"):
            participants[cid] |= _people(sender, to, cc)

    # Links made in this batch are newer than any stored one.
    batch_ref: dict[str, list] = defaultdict(list)  # Message-ID -> [(order, conversation)]
    batch_root: dict[str, list] = defaultdict(list)

    def candidates_from(keys, stored, in_batch) -> list:
        links = [(1, order, conv) for k in keys for order, conv in in_batch.get(k, ())]
        links += [
            (0, created, conversations[cid]) for k in keys for created, cid in stored.get(k, ())
        ]
        links.sort(key=lambda x: (x[0], x[1]), reverse=True)
        seen, out = set(), []
        for _, _, conv in links[:20]:
            if conv.pk not in seen:
                seen.add(conv.pk)
                out.append(conv)
        return out

    opened, links = [], []
    bumps: dict = {}  # existing conversation pk -> [count, latest, reopen]
    for order, message in enumerate(todo):
        when = message.sent_at or now
        refs = [r for r in (message.in_reply_to, *reversed(message.references)) if r]
        root = getattr(message, "thread_root", "")
        candidates = candidates_from(refs, ref_links, batch_ref) if refs else []
        if not candidates and root:
            candidates = candidates_from([root], root_links, batch_root)
        conversation = None
        sender = message.from_address.lower()
        for candidate in candidates:
            if (
                message.direction == Direction.OUTBOUND
                or sender == team_address
                or sender in participants[candidate.pk] - {""}
            ):
                conversation = candidate
                break
        if conversation is None and not candidates:
            customer = _customer_of(message, team_address)
            subject = _normalize(message.subject)
            if customer and subject:
                since = when - FALLBACK
                recent = sorted(
                    (
                        c
                        for c in by_customer.get(customer, ())
                        if c.last_message_at and c.last_message_at >= since
                    ),
                    key=lambda c: c.last_message_at,
                    reverse=True,
                )[:20]
                conversation = next((c for c in recent if _normalize(c.subject) == subject), None)
        if conversation is None:
            conversation = Conversation(
                account_id=inbox.account_id,
                inbox=inbox,
                subject=message.subject,
                customer_address=_customer_of(message, team_address),
                last_message_at=when,
                message_count=0,
            )
            conversation._bench_new = True
            conversations[conversation.pk] = conversation
            participants[conversation.pk].add(conversation.customer_address)
            if conversation.customer_address:
                by_customer[conversation.customer_address].append(conversation)
            opened.append(conversation)
        links.append(ConversationMessage(inbox=inbox, conversation=conversation, message=message))
        participants[conversation.pk] |= _people(message.from_address, message.to, message.cc)
        if message.message_id:
            batch_ref[message.message_id].append((order, conversation))
        if root:
            batch_root[root].append((order, conversation))
        customer_wrote = (
            message.direction == Direction.INBOUND and message.from_address.lower() != team_address
        )
        if getattr(conversation, "_bench_new", False):
            conversation.message_count += 1
            conversation.last_message_at = max(conversation.last_message_at, when)
        else:
            bump = bumps.setdefault(conversation.pk, [0, when, False])
            bump[0] += 1
            bump[1] = max(bump[1], when)
            if customer_wrote and not backfill and conversation.status == ConversationStatus.CLOSED:
                bump[2] = True
            # Keep the in-memory copy current for later messages of the batch.
            if conversation.last_message_at is None or when > conversation.last_message_at:
                conversation.last_message_at = when

    Conversation.objects.bulk_create(opened)
    ConversationMessage.objects.bulk_create(links)
    if bumps:
        values = ", ".join(["(%s::uuid, %s::integer, %s::timestamptz, %s::boolean)"] * len(bumps))
        params = [p for pk, (n, latest, reopen) in bumps.items() for p in (pk, n, latest, reopen)]
        table = Conversation._meta.db_table
        with connection.cursor() as cursor:
            cursor.execute(
                f"""UPDATE {table} AS c SET
                        message_count = c.message_count + v.n,
                        last_message_at = GREATEST(c.last_message_at, v.latest),
                        status = CASE WHEN v.reopen THEN %s ELSE c.status END,
                        updated_at = %s
                    FROM (VALUES {values}) AS v(id, n, latest, reopen)
                    WHERE c.id = v.id""",
                [ConversationStatus.OPEN, now, *params],
            )
    for conversation in opened:
        conversation_route(conversation, notify=not backfill)
    return opened


threading_module.thread_into_inbox = thread_into_inbox
