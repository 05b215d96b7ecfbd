"""Routing of new conversations (R9): who gets a conversation, and why.

Per inbox (RoutingRule): no automatic assignment, or round-robin among chosen
users or the members of a team, skipping anyone unavailable or deactivated.
The rule's row is locked while the next person is chosen, so concurrent
arrivals (several workers syncing at once) still take strict turns. Every
automatic assignment records why it was made (rule, candidates, whose turn,
who was skipped) as a ConversationEvent shown on the conversation.
"""

from __future__ import annotations

from collections import defaultdict

from django.db import transaction
from django.utils import timezone

from accounts.models import User
from conversations.models import (
    Conversation,
    ConversationEvent,
    ConversationStatus,
    EventKind,
    RoutingMode,
    RoutingRule,
)
from conversations.notices import notify_assigned


def routing_candidates(rule: RoutingRule) -> list[User]:
    """Everyone the rule names, in a stable order (the order of turns)."""
    people = list(rule.team.members.all()) if rule.team is not None else list(rule.users.all())
    return sorted(people, key=lambda u: (u.full_name.lower(), u.email, str(u.pk)))


def next_in_turn(candidates: list[User], last_id) -> tuple[User | None, list[str]]:
    """The first available, active candidate after ``last_id``, and who was skipped."""
    if not candidates:
        return None, []
    ids = [c.pk for c in candidates]
    start = (ids.index(last_id) + 1) if last_id in ids else 0
    skipped: list[str] = []
    for offset in range(len(candidates)):
        person = candidates[(start + offset) % len(candidates)]
        if person.is_active and person.is_available:
            return person, skipped
        skipped.append(f"{person.display_name} ({'away' if person.is_active else 'deactivated'})")
    return None, skipped


def conversation_route(conversation: Conversation, *, notify: bool) -> User | None:
    """Apply the inbox's routing rule to a new (or orphaned) conversation."""
    return conversations_route([conversation], notify=notify)[0]


def conversations_route(conversations: list[Conversation], *, notify: bool) -> list[User | None]:
    """Apply their inbox's routing rule to new (or orphaned) conversations, taking turns
    in list order; returns who got each one.

    ``notify`` is False for imported history: old mail is filed but never
    assigned, notified or auto-answered. An inbox without a round-robin rule costs
    one look-up for the whole list; with one, the rule is locked once for the list.
    """
    chosen: list[User | None] = [None] * len(conversations)
    if not notify:
        return chosen
    waiting: dict = defaultdict(list)  # inbox id -> [(position, conversation)]
    for position, conversation in enumerate(conversations):
        if conversation.status == ConversationStatus.OPEN:
            waiting[conversation.inbox_id].append((position, conversation))
    if not waiting:
        return chosen
    ruled = set(
        RoutingRule.objects.filter(
            inbox_id__in=list(waiting), mode=RoutingMode.ROUND_ROBIN
        ).values_list("inbox_id", flat=True)
    )
    for inbox_id in ruled:
        with transaction.atomic():
            rule = (
                RoutingRule.objects.select_for_update()
                .filter(inbox_id=inbox_id, mode=RoutingMode.ROUND_ROBIN)
                .first()
            )
            if rule is not None:
                for position, person in _take_turns(rule, waiting[inbox_id]):
                    chosen[position] = person
    return chosen


def _take_turns(rule: RoutingRule, waiting: list) -> list[tuple[int, User]]:
    """Assign each conversation to the next person in turn (the rule's row is locked)."""
    candidates = routing_candidates(rule)
    names = [c.display_name for c in candidates]
    source = f"team {rule.team.name}" if rule.team is not None else "chosen users"
    assigned, events = [], []
    for position, conversation in waiting:
        person, skipped = next_in_turn(candidates, rule.last_assigned_id)
        if person is None:
            events.append(
                ConversationEvent(
                    conversation=conversation,
                    kind=EventKind.UNASSIGNED,
                    detail={
                        "rule": "round_robin",
                        "reason": "nobody in the rule is available",
                        "candidates": names,
                        "skipped": skipped,
                    },
                )
            )
            continue
        taken = Conversation.objects.filter(pk=conversation.pk, assignee__isnull=True).update(
            assignee=person, updated_at=timezone.now()
        )
        if not taken:
            continue  # someone assigned it by hand meanwhile
        rule.last_assigned = person
        conversation.assignee = person
        assigned.append((position, person))
        events.append(
            ConversationEvent(
                conversation=conversation,
                kind=EventKind.ASSIGNED,
                assignee=person,
                detail={
                    "rule": "round_robin",
                    "source": source,
                    "candidates": names,
                    "turn": person.display_name,
                    "skipped": skipped,
                },
            )
        )
    if assigned:
        rule.save(update_fields=["last_assigned", "updated_at"])
    ConversationEvent.objects.bulk_create(events)
    for event in events:
        if event.kind == EventKind.ASSIGNED and event.assignee is not None and event.pk:
            notify_assigned(event.conversation, event.assignee, actor=None, event_id=event.pk)
    return assigned
