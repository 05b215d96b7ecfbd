"""Routing (R9): round-robin fairness, skipping, re-routing, and why it chose."""

from __future__ import annotations

import os
import threading
from collections import Counter

import pytest
from django.db import connections

from accounts.models import Team
from accounts.services import user_deactivate
from conversations.models import Conversation, ConversationEvent
from conversations.routing import conversation_route
from conversations.services import routing_rule_set
from inboxes.models import Inbox
from tests.support.conversations_factory import make_conversation
from tests.support.factories import UserFactory


@pytest.fixture
def agents(account):
    return [UserFactory(account=account, full_name=name) for name in ("Ada", "Ben", "Cleo")]


@pytest.fixture
def inbox(account):
    return Inbox.objects.create(account=account, name="Support")


@pytest.mark.django_db
def test_round_robin_spreads_conversations_evenly(admin, inbox, agents):
    routing_rule_set(actor=admin, inbox=inbox, mode="round_robin", users=agents)
    for _ in range(9):
        make_conversation(inbox)
    counts = Counter(Conversation.objects.values_list("assignee__full_name", flat=True))
    assert counts == {"Ada": 3, "Ben": 3, "Cleo": 3}
    order = list(
        Conversation.objects.order_by("created_at").values_list("assignee__full_name", flat=True)
    )
    assert order[:3] == ["Ada", "Ben", "Cleo"]


@pytest.mark.django_db
def test_unavailable_and_deactivated_people_are_skipped_and_the_reason_is_recorded(
    admin, inbox, agents
):
    routing_rule_set(actor=admin, inbox=inbox, mode="round_robin", users=agents)
    ada, ben, cleo = agents
    ben.is_available = False
    ben.save()
    cleo.is_active = False
    cleo.save()
    for _ in range(3):
        make_conversation(inbox)
    assert set(Conversation.objects.values_list("assignee__full_name", flat=True)) == {"Ada"}
    event = ConversationEvent.objects.filter(kind="assigned").last()
    assert event.detail["rule"] == "round_robin"
    assert event.detail["turn"] == "Ada"
    assert event.detail["candidates"] == ["Ada", "Ben", "Cleo"]
    assert (
        "Ben (away)" in event.detail["skipped"] and "Cleo (deactivated)" in event.detail["skipped"]
    )


@pytest.mark.django_db
def test_a_team_rule_uses_the_teams_members(admin, account, inbox, agents):
    team = Team.objects.create(account=account, name="Tier 1")
    team.members.add(agents[1], agents[2])
    routing_rule_set(actor=admin, inbox=inbox, mode="round_robin", team=team)
    for _ in range(4):
        make_conversation(inbox)
    assert Counter(Conversation.objects.values_list("assignee__full_name", flat=True)) == {
        "Ben": 2,
        "Cleo": 2,
    }


@pytest.mark.django_db
def test_no_rule_leaves_conversations_unassigned_and_history_is_never_routed(admin, inbox, agents):
    make_conversation(inbox)
    assert Conversation.objects.get().assignee is None
    routing_rule_set(actor=admin, inbox=inbox, mode="round_robin", users=agents)
    make_conversation(inbox, backfill=True)
    assert Conversation.objects.filter(assignee__isnull=False).count() == 0


@pytest.mark.django_db
def test_a_deactivated_assignees_conversations_go_back_to_routing(admin, inbox, agents):
    routing_rule_set(actor=admin, inbox=inbox, mode="round_robin", users=agents[:2])
    for _ in range(4):
        make_conversation(inbox)
    ada = agents[0]
    assert Conversation.objects.filter(assignee=ada).count() == 2
    user_deactivate(actor=admin, user=ada)
    assert Conversation.objects.filter(assignee=ada).count() == 0
    assert Conversation.objects.filter(assignee=agents[1]).count() == 4
    reasons = ConversationEvent.objects.filter(kind="unassigned").values_list("detail", flat=True)
    assert all("deactivated" in r["reason"] for r in reasons) and len(reasons) == 2


requires_postgres = pytest.mark.skipif(
    not os.environ.get("DATABASE_URL", "").startswith(("postgres:", "postgresql:")),
    reason="concurrent arrivals are tested on PostgreSQL (.ci/run)",
)


@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_round_robin_stays_fair_under_concurrent_arrivals(admin, inbox, agents):
    routing_rule_set(actor=admin, inbox=inbox, mode="round_robin", users=agents)
    from conversations.models import Conversation as C
    from tests.support.conversations_factory import make_message

    conversations = []
    for _ in range(30):
        message = make_message(inbox)
        conversations.append(
            C.objects.create(account_id=inbox.account_id, inbox=inbox, subject=message.subject)
        )
    barrier = threading.Barrier(10)

    def route(batch):
        barrier.wait()
        try:
            for conversation in batch:
                conversation_route(conversation, notify=True)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=route, args=(conversations[i::10],)) for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    counts = Counter(C.objects.values_list("assignee__full_name", flat=True))
    assert counts == {"Ada": 10, "Ben": 10, "Cleo": 10}


@pytest.mark.django_db
def test_a_batch_of_new_conversations_takes_turns_in_the_order_mail_arrived(admin, inbox, agents):
    from conversations.models import RoutingRule
    from conversations.threading import thread_into_inbox
    from tests.support.conversations_factory import make_message

    routing_rule_set(actor=admin, inbox=inbox, mode="round_robin", users=agents)
    make_conversation(inbox)  # Ada's turn is taken
    agents[2].is_available = False
    agents[2].save()
    batch = [make_message(inbox, sender=f"c{n}@customer.example.com") for n in range(5)]
    opened = thread_into_inbox(inbox, batch, backfill=False)
    by_message = {m: Conversation.objects.get(messages=m).assignee.full_name for m in batch}
    assert [by_message[m] for m in batch] == ["Ben", "Ada", "Ben", "Ada", "Ben"]
    assert [c.assignee.full_name for c in opened] == ["Ben", "Ada", "Ben", "Ada", "Ben"]
    assert RoutingRule.objects.get(inbox=inbox).last_assigned == agents[1]
    events = ConversationEvent.objects.filter(kind="assigned", conversation__in=opened)
    assert events.count() == 5
    assert all(e.detail["skipped"] in ([], ["Cleo (away)"]) for e in events)


@requires_postgres
@pytest.mark.django_db
def test_without_a_rule_new_conversations_lock_nothing(admin, inbox, agents):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from conversations.threading import thread_into_inbox
    from tests.support.conversations_factory import make_message

    routing_rule_set(actor=admin, inbox=inbox, mode="none", users=agents)
    batch = [make_message(inbox, sender=f"c{n}@customer.example.com") for n in range(5)]
    with CaptureQueriesContext(connection) as queries:
        assert len(thread_into_inbox(inbox, batch, backfill=False)) == 5
    sql = " ".join(q["sql"].upper() for q in queries.captured_queries)
    assert "FOR UPDATE" not in sql and "SAVEPOINT" not in sql
    assert not Conversation.objects.filter(assignee__isnull=False).exists()
    # With a rule, the five take turns under one lock of the rule.
    routing_rule_set(actor=admin, inbox=inbox, mode="round_robin", users=agents)
    batch = [make_message(inbox, sender=f"d{n}@customer.example.com") for n in range(5)]
    with CaptureQueriesContext(connection) as queries:
        thread_into_inbox(inbox, batch, backfill=False)
    sql = [q["sql"].upper() for q in queries.captured_queries]
    assert sum("FOR UPDATE" in q for q in sql) == 1
    assert Conversation.objects.filter(assignee__isnull=False).count() == 5
