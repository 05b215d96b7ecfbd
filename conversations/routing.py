"""Routing of new conversations (R9): who gets a conversation, and why.

Per inbox (RoutingRule): no automatic assignment, or round-robin among chosen
users or the members of a team, skipping anyone unavailable or deactivated.
The rule's row is locked while the next person is chosen, so concurrent
arrivals (several workers syncing at once) still take strict turns. Every
automatic assignment records why it was made (rule, candidates, whose turn,
who was skipped) as a ConversationEvent shown on the conversation.
"""

from __future__ import annotations

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


def routing_candidates(rule: RoutingRule) -> list[User]:
    """Everyone the rule names, in a stable order (the order of turns)."""
    people = list(rule.team.members.all()) if rule.team_id else list(rule.users.all())
    return sorted(people, key=lambda u: (u.full_name.lower(), u.email, str(u.pk)))


def next_in_turn(candidates: list[User], last_id) -> tuple[User | None, list[str]]:
    """The first available, active candidate after ``last_id``, and who was skipped."""
    if not candidates:
        return None, []
    ids = [c.pk for c in candidates]
    start = (ids.index(last_id) + 1) if last_id in ids else 0
    skipped = []
    for offset in range(len(candidates)):
        person = candidates[(start + offset) % len(candidates)]
        if person.is_active and person.is_available:
            return person, skipped
        skipped.append(f"{person.display_name} ({'away' if person.is_active else 'deactivated'})")
    return None, skipped


def conversation_route(conversation: Conversation, *, notify: bool) -> User | None:
    """Apply the inbox's routing rule to a new (or orphaned) conversation.

    ``notify`` is False for imported history: old mail is filed but never
    assigned, notified or auto-answered.
    """
    if not notify or conversation.status != ConversationStatus.OPEN:
        return None
    with transaction.atomic():
        rule = (
            RoutingRule.objects.select_for_update()
            .filter(inbox_id=conversation.inbox_id, mode=RoutingMode.ROUND_ROBIN)
            .first()
        )
        if rule is None:
            return None
        candidates = routing_candidates(rule)
        chosen, skipped = next_in_turn(candidates, rule.last_assigned_id)
        if chosen is None:
            ConversationEvent.objects.create(
                conversation=conversation,
                kind=EventKind.UNASSIGNED,
                detail={
                    "rule": "round_robin",
                    "reason": "nobody in the rule is available",
                    "candidates": [c.display_name for c in candidates],
                    "skipped": skipped,
                },
            )
            return None
        taken = Conversation.objects.filter(pk=conversation.pk, assignee__isnull=True).update(
            assignee=chosen, updated_at=timezone.now()
        )
        if not taken:
            return None  # someone assigned it by hand meanwhile
        rule.last_assigned = chosen
        rule.save(update_fields=["last_assigned", "updated_at"])
        ConversationEvent.objects.create(
            conversation=conversation,
            kind=EventKind.ASSIGNED,
            assignee=chosen,
            detail={
                "rule": "round_robin",
                "source": f"team {rule.team.name}" if rule.team_id else "chosen users",
                "candidates": [c.display_name for c in candidates],
                "turn": chosen.display_name,
                "skipped": skipped,
            },
        )
    conversation.assignee = chosen
    return chosen
