"""/api/v1/conversations/ and /api/v1/inboxes/{id}/routing/: filters, permissions,
tenants, replies, notes, and a fixed number of queries per request."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.models import Team
from conversations.models import Conversation, RoutingRule
from inboxes.models import Inbox, Mailbox
from tests.support.api import api_client_for
from tests.support.conversations_factory import make_conversation, make_message
from tests.support.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def support(account, admin):
    mailbox = Mailbox.objects.create(
        account=account,
        kind="team",
        address="support@acme.example.com",
        canonical_address="support@acme.example.com",
        imap_host="imap.acme.example.com",
    )
    return Inbox.objects.create(
        account=account, name="Support", mailbox=mailbox, from_name="Acme Support"
    )


@pytest.fixture
def sales(account):
    return Inbox.objects.create(account=account, name="Sales")


def ids(response):
    return {item["id"] for item in response.json()["results"]}


def test_filters_by_inbox_status_assignee_unassigned_and_search(member_api, member, support, sales):
    open_one = make_conversation(
        support, subject="Printer on fire", sender="dan@customer.example.com"
    )
    closed = make_conversation(support, subject="Invoice", text="the amount is wrong")
    mine = make_conversation(sales, subject="Quote")
    Conversation.objects.filter(pk=closed.pk).update(status="closed")
    Conversation.objects.filter(pk=mine.pk).update(assignee=member)
    url = "/api/v1/conversations/"
    assert ids(member_api.get(url)) == {str(open_one.pk), str(closed.pk), str(mine.pk)}
    assert ids(member_api.get(url, {"inbox": support.pk})) == {str(open_one.pk), str(closed.pk)}
    assert ids(member_api.get(url, {"status": "closed"})) == {str(closed.pk)}
    assert ids(member_api.get(url, {"assignee": member.pk})) == {str(mine.pk)}
    assert ids(member_api.get(url, {"unassigned": "true"})) == {str(open_one.pk), str(closed.pk)}
    assert ids(member_api.get(url, {"search": "printer"})) == {str(open_one.pk)}
    assert ids(member_api.get(url, {"search": "dan@customer"})) == {str(open_one.pk)}
    assert ids(member_api.get(url, {"search": "amount is wrong"})) == {str(closed.pk)}
    bad = member_api.get(url, {"status": "sleeping"})
    assert bad.status_code == 400 and bad.json()["code"] == "invalid"


def test_list_shape_and_cursor_pagination(member_api, support):
    for n in range(5):
        make_conversation(support, subject=f"Q{n}")
    first = member_api.get("/api/v1/conversations/", {"page_size": 2}).json()
    assert set(first["results"][0]) >= {
        "id",
        "inbox",
        "subject",
        "status",
        "assignee",
        "contact",
        "last_message_at",
        "message_count",
    }
    seen = [item["id"] for item in first["results"]]
    page = first
    while page["next"]:
        page = member_api.get(page["next"]).json()
        seen += [item["id"] for item in page["results"]]
    assert len(seen) == len(set(seen)) == 5


def test_detail_has_messages_and_notes_in_order(member_api, member, support):
    conversation = make_conversation(support, messages=3)
    member_api.post(
        f"/api/v1/conversations/{conversation.pk}/notes/", {"text": "Looking"}, format="json"
    )
    body = member_api.get(f"/api/v1/conversations/{conversation.pk}/").json()
    assert [m["text"] for m in body["messages"]] == ["Hello", "Follow-up 1", "Follow-up 2"]
    first = body["messages"][0]
    assert first["from"] == {"name": "Carol", "address": "carol@customer.example.com"}
    assert first["direction"] == "inbound" and first["delivery"] is None
    assert set(first) >= {
        "id",
        "to",
        "cc",
        "subject",
        "sent_at",
        "message_id",
        "html",
        "attachments",
    }
    assert [n["text"] for n in body["notes"]] == ["Looking"]


def test_assign_reassign_unassign_close_and_reopen(member_api, member, other_member, support):
    conversation = make_conversation(support)
    url = f"/api/v1/conversations/{conversation.pk}/"
    assert member_api.patch(url, {"assignee": str(member.pk)}, format="json").json()[
        "assignee"
    ] == str(member.pk)
    assert member_api.patch(url, {"assignee": str(other_member.pk)}, format="json").json()[
        "assignee"
    ] == str(other_member.pk)
    assert member_api.patch(url, {"assignee": None}, format="json").json()["assignee"] is None
    assert member_api.patch(url, {"status": "closed"}, format="json").json()["status"] == "closed"
    assert Conversation.objects.get(pk=conversation.pk).closed_at is not None
    assert member_api.patch(url, {"status": "open"}, format="json").json()["status"] == "open"
    kinds = [e["kind"] for e in member_api.get(url).json()["events"]]
    assert kinds == ["assigned", "assigned", "unassigned", "closed", "reopened"]


def test_cannot_assign_to_a_deactivated_or_foreign_user(member_api, member, outsider, support):
    conversation = make_conversation(support)
    url = f"/api/v1/conversations/{conversation.pk}/"
    assert member_api.patch(url, {"assignee": str(outsider.pk)}, format="json").status_code == 404
    gone = UserFactory(account=member.account, is_active=False)
    response = member_api.patch(url, {"assignee": str(gone.pk)}, format="json")
    assert response.status_code == 400
    assert Conversation.objects.get(pk=conversation.pk).assignee is None


def test_reply_answers_201_with_the_queued_outbound_message(member_api, support):
    conversation = make_conversation(support, subject="Broken")
    response = member_api.post(
        f"/api/v1/conversations/{conversation.pk}/replies/", {"text": "On it."}, format="json"
    )
    assert response.status_code == 201, response.json()
    message = response.json()
    assert message["direction"] == "outbound"
    assert message["delivery"] == {
        "state": "queued",
        "detail": "",
        "scheduled_for": None,
        "bounces": [],
    }
    assert message["kind"] == "email" and message["bounce"] is None
    assert message["from"]["address"] == "support@acme.example.com"
    assert message["subject"] == "Re: Broken"
    assert message["text"].startswith("On it.")
    assert "> Hello" in message["text"]  # the last message is quoted
    detail = member_api.get(f"/api/v1/conversations/{conversation.pk}/").json()
    assert detail["messages"][-1]["id"] == message["id"]
    assert Conversation.objects.get(pk=conversation.pk).first_response_at is not None


def test_reply_validation_and_a_missing_team_email(member_api, sales, support):
    conversation = make_conversation(support)
    empty = member_api.post(
        f"/api/v1/conversations/{conversation.pk}/replies/", {"text": ""}, format="json"
    )
    assert empty.status_code == 400 and "text" in empty.json()["errors"]
    orphan = make_conversation(sales)
    response = member_api.post(
        f"/api/v1/conversations/{orphan.pk}/replies/", {"text": "Hi"}, format="json"
    )
    assert response.status_code == 400
    assert "no connected team email" in response.json()["detail"]


def test_notes_record_mentions(member_api, other_member, support):
    conversation = make_conversation(support)
    response = member_api.post(
        f"/api/v1/conversations/{conversation.pk}/notes/",
        {"text": "@cy can you check the invoice?"},
        format="json",
    )
    assert response.status_code == 201
    assert response.json()["mentions"] == [str(other_member.pk)]


def test_a_restricted_inbox_is_seen_only_by_its_teams_and_admins(
    member_api, admin_api, member, other_member, support
):
    conversation = make_conversation(support)
    team = Team.objects.create(account=support.account, name="Tier 2")
    team.members.add(other_member)
    support.restricted = True
    support.save()
    support.visible_to_teams.add(team)
    assert member_api.get("/api/v1/conversations/").json()["results"] == []
    assert member_api.get(f"/api/v1/conversations/{conversation.pk}/").status_code == 404
    assert member_api.get(f"/api/v1/inboxes/{support.pk}/").status_code == 404
    assert (
        member_api.post(
            f"/api/v1/conversations/{conversation.pk}/replies/", {"text": "x"}, format="json"
        ).status_code
        == 404
    )
    assert ids(api_client_for(other_member).get("/api/v1/conversations/")) == {str(conversation.pk)}
    assert ids(admin_api.get("/api/v1/conversations/")) == {str(conversation.pk)}


def test_another_accounts_conversations_answer_404(outsider_api, support):
    conversation = make_conversation(support)
    for method, url, body in [
        ("get", f"/api/v1/conversations/{conversation.pk}/", None),
        ("patch", f"/api/v1/conversations/{conversation.pk}/", {"status": "closed"}),
        ("post", f"/api/v1/conversations/{conversation.pk}/replies/", {"text": "x"}),
        ("post", f"/api/v1/conversations/{conversation.pk}/notes/", {"text": "x"}),
        ("get", f"/api/v1/inboxes/{support.pk}/routing/", None),
        ("get", f"/api/v1/inboxes/{support.pk}/metrics/", None),
    ]:
        response = getattr(outsider_api, method)(url, body, format="json")
        assert response.status_code == 404, url
    assert outsider_api.get("/api/v1/conversations/").json()["results"] == []
    assert Conversation.objects.get(pk=conversation.pk).status == "open"


def test_unread_per_user(member_api, other_member, support):
    conversation = make_conversation(support)
    assert member_api.get("/api/v1/conversations/").json()["results"][0]["unread"] is True
    member_api.get(f"/api/v1/conversations/{conversation.pk}/")
    assert member_api.get("/api/v1/conversations/").json()["results"][0]["unread"] is False
    other = api_client_for(other_member)
    assert other.get("/api/v1/conversations/").json()["results"][0]["unread"] is True


def test_routing_get_and_put_by_admins_only(admin_api, member_api, member, other_member, support):
    url = f"/api/v1/inboxes/{support.pk}/routing/"
    assert admin_api.get(url).json()["mode"] == "none"
    body = {"mode": "round_robin", "users": [str(member.pk), str(other_member.pk)]}
    assert member_api.put(url, body, format="json").status_code == 403
    response = admin_api.put(url, body, format="json")
    assert response.status_code == 200
    assert set(response.json()["users"]) == {str(member.pk), str(other_member.pk)}
    invalid = admin_api.put(url, {"mode": "round_robin"}, format="json")
    assert invalid.status_code == 400
    assert RoutingRule.objects.get(inbox=support).mode == "round_robin"


def test_a_routing_team_without_members_is_refused_by_the_api_too(
    admin_api, account, member, support
):
    # Given a team nobody is in yet, and an inbox that takes turns among chosen people
    empty = Team.objects.create(account=account, name="Nobody yet")
    url = f"/api/v1/inboxes/{support.pk}/routing/"
    body = {"mode": "round_robin", "users": [str(member.pk)]}
    assert admin_api.put(url, body, format="json").status_code == 200

    # When an admin asks for round-robin among the empty team's members
    response = admin_api.put(url, {"mode": "round_robin", "team": str(empty.pk)}, format="json")

    # Then it is refused as the Routing page refuses it, and the rule is unchanged
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid"
    assert "Team Nobody yet has no members yet" in body["detail"]
    assert "team" in body["errors"]
    rule = RoutingRule.objects.get(inbox=support)
    assert (rule.mode, rule.team, list(rule.users.all())) == ("round_robin", None, [member])

    # A team without members may still be named while routing is off
    response = admin_api.put(url, {"mode": "none", "team": str(empty.pk)}, format="json")
    assert response.status_code == 200


def test_an_inbox_seen_by_no_team_is_refused_by_the_api_too(admin_api, account, support):
    # Given an inbox everyone sees
    url = f"/api/v1/inboxes/{support.pk}/"

    # When an admin restricts it to teams but names none, or takes its last team away
    for body in ({"restricted": True}, {"restricted": True, "teams": []}):
        response = admin_api.patch(url, body, format="json")

        # Then it is refused as the Routing and access page refuses it
        assert response.status_code == 400, body
        assert response.json()["code"] == "invalid"
        assert "Choose at least one team" in response.json()["detail"]
        assert "teams" in response.json()["errors"]
    team = Team.objects.create(account=account, name="Tier 2")
    body = {"restricted": True, "teams": [str(team.pk)]}
    assert admin_api.patch(url, body, format="json").status_code == 200
    response = admin_api.patch(url, {"teams": []}, format="json")
    assert response.status_code == 400 and response.json()["code"] == "invalid"

    # And nothing changed
    support.refresh_from_db()
    assert support.restricted is True
    assert list(support.visible_to_teams.all()) == [team]


def test_metrics_api(member_api, member, support):
    from django.utils import timezone

    conversation = make_conversation(support)
    member_api.patch(
        f"/api/v1/conversations/{conversation.pk}/", {"assignee": str(member.pk)}, format="json"
    )
    member_api.post(
        f"/api/v1/conversations/{conversation.pk}/replies/", {"text": "Hi"}, format="json"
    )
    member_api.patch(
        f"/api/v1/conversations/{conversation.pk}/", {"status": "closed"}, format="json"
    )
    body = member_api.get(f"/api/v1/inboxes/{support.pk}/metrics/", {"days": 7}).json()
    assert len(body["days"]) == 7 and body["days"][-1] == timezone.localdate().isoformat()
    assert body["opened_per_day"][-1] == 1 and body["closed_per_day"][-1] == 1
    assert body["first_response"]["count"] == 1 and body["time_to_close"]["count"] == 1
    assert [a["name"] for a in body["agents"]] == ["Bo Lee"]


@pytest.mark.parametrize("rows", [3, 15])
def test_list_queries_do_not_grow_with_rows(
    member_api, support, rows, django_assert_max_num_queries
):
    for _ in range(rows):
        make_conversation(support)
    with CaptureQueriesContext(connection) as queries:
        assert member_api.get("/api/v1/conversations/").status_code == 200
    assert len(queries) <= 6, [q["sql"] for q in queries]
    # Inbox and assignee are rendered as ids: no user rows (password hashes) joined in.
    [listing] = [q["sql"] for q in queries if "conversations_conversation" in q["sql"]]
    assert "accounts_user" not in listing and 'conversations_inbox"."name' not in listing


@pytest.mark.parametrize("messages", [2, 25])
def test_detail_queries_do_not_grow_with_the_thread(member_api, support, messages):
    conversation = make_conversation(support, messages=messages)
    make_message(support)  # noise elsewhere
    with CaptureQueriesContext(connection) as queries:
        assert member_api.get(f"/api/v1/conversations/{conversation.pk}/").status_code == 200
    assert len(queries) <= 16, [q["sql"] for q in queries]


def test_admins_restrict_an_inbox_to_teams_and_set_a_signature(
    admin_api, member_api, account, support
):
    team = Team.objects.create(account=account, name="Tier 2")
    response = admin_api.patch(
        f"/api/v1/inboxes/{support.pk}/",
        {"restricted": True, "teams": [str(team.pk)], "signature": "The Acme team"},
        format="json",
    )
    assert response.status_code == 200
    assert response.json()["restricted"] is True and response.json()["teams"] == [str(team.pk)]
    assert member_api.get(f"/api/v1/inboxes/{support.pk}/").status_code == 404
    conversation = make_conversation(support)
    reply = admin_api.post(
        f"/api/v1/conversations/{conversation.pk}/replies/", {"text": "Hi"}, format="json"
    ).json()
    assert "-- \nThe Acme team" in reply["text"]
