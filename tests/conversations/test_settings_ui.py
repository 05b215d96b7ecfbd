"""Settings > Inboxes > Routing and access, Settings > Users > Teams and the inbox
overview, through Django's test client (tests/browser/test_browser_settings.py drives them
in a browser)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.models import Team
from conversations import services
from conversations.charts import _nice_ceiling, bar_chart, duration_text
from conversations.handling import conversation_set_status, user_set_available
from conversations.models import Conversation, RoutingRule
from core.errors import Invalid
from inboxes.models import Inbox
from inboxes.selectors import inboxes_visible_to
from tests.support.conversations_factory import make_conversation

pytestmark = pytest.mark.django_db


@pytest.fixture
def inbox(account):
    return Inbox.objects.create(account=account, name="Support")


@pytest.fixture
def team(account, other_member):
    team = Team.objects.create(account=account, name="Tier 1")
    team.members.add(other_member)
    return team


def routing_url(inbox) -> str:
    return f"/settings/inboxes/{inbox.pk}/routing/"


def overview_url(inbox, days: int | str | None = None) -> str:
    return f"/inbox/overview/{inbox.pk}/" + (f"?days={days}" if days is not None else "")


def assignees(inbox) -> list[str | None]:
    return list(
        Conversation.objects.filter(inbox=inbox)
        .order_by("created_at", "id")
        .values_list("assignee__full_name", flat=True)
    )


# --- Who may open what ---------------------------------------------------------------------------


def test_pages_need_login(client, inbox):
    for url in [routing_url(inbox), "/settings/teams/", overview_url(inbox)]:
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/login/"), url


def test_a_member_gets_403_on_routing_and_teams_and_changes_nothing(
    client, member, other_member, inbox, team
):
    client.force_login(member)
    assert client.get(routing_url(inbox)).status_code == 403
    assert client.get("/settings/teams/").status_code == 403
    posts = {
        routing_url(inbox): {"mode": "round_robin", "source": "users", "users": [member.pk]},
        f"/settings/inboxes/{inbox.pk}/visibility/": {"visibility": "teams", "teams": [team.pk]},
        f"/settings/inboxes/{inbox.pk}/replies/": {"from_name": "Hacked", "signature": "Hacked"},
        "/settings/teams/new/": {"name": "Sneaky", "members": [member.pk]},
        f"/settings/teams/{team.pk}/": {"name": "Renamed", "members": [member.pk]},
        f"/settings/teams/{team.pk}/delete/": {},
    }
    for url, data in posts.items():
        assert client.post(url, data).status_code == 403, url
    inbox.refresh_from_db()
    team.refresh_from_db()
    assert not RoutingRule.objects.exists()
    assert not inbox.restricted and inbox.from_name == "" and inbox.signature == ""
    assert list(Team.objects.values_list("name", flat=True)) == ["Tier 1"]
    assert list(team.members.all()) == [other_member]
    # The member does see the overview of an inbox open to everyone, without admin links.
    page = client.get(overview_url(inbox))
    assert page.status_code == 200
    assert routing_url(inbox) not in page.content.decode()


def test_another_accounts_inbox_and_team_are_404(client, admin, outsider):
    theirs = Inbox.objects.create(account=outsider.account, name="Globex support")
    their_team = Team.objects.create(account=outsider.account, name="Globex team")
    client.force_login(admin)
    assert client.get(routing_url(theirs)).status_code == 404
    assert client.post(routing_url(theirs), {"mode": "none"}).status_code == 404
    assert (
        client.post(
            f"/settings/inboxes/{theirs.pk}/visibility/", {"visibility": "everyone"}
        ).status_code
        == 404
    )
    assert client.post(f"/settings/inboxes/{theirs.pk}/replies/", {}).status_code == 404
    assert client.get(overview_url(theirs)).status_code == 404
    assert client.post(f"/settings/teams/{their_team.pk}/", {"name": "x"}).status_code == 404
    assert client.post(f"/settings/teams/{their_team.pk}/delete/").status_code == 404
    assert Team.objects.filter(pk=their_team.pk, name="Globex team").exists()
    assert not RoutingRule.objects.exists()


# --- Routing -------------------------------------------------------------------------------------


def test_round_robin_saved_on_the_page_assigns_the_next_conversations(
    client, admin, member, other_member, inbox, team
):
    client.force_login(admin)
    page = client.get(routing_url(inbox))
    assert page.status_code == 200
    assert "Automatic assignment is off" in page.content.decode()

    response = client.post(
        routing_url(inbox),
        {"mode": "round_robin", "source": "users", "users": [member.pk, other_member.pk]},
        follow=True,
    )
    html = response.content.decode()
    assert "go round-robin to Bo Lee and Cy Young" in html
    assert "Next: <strong>Bo Lee</strong>" in html
    for _ in range(3):
        make_conversation(inbox)
    assert assignees(inbox) == ["Bo Lee", "Cy Young", "Bo Lee"]

    # Bo is away: the page says so, and the turn passes to Cy.
    user_set_available(user=member, available=False)
    html = client.get(routing_url(inbox)).content.decode()
    assert "Away, skipped" in html and "Next: <strong>Cy Young</strong>" in html
    make_conversation(inbox)
    assert assignees(inbox)[-1] == "Cy Young"

    # A team instead: only its member (Cy) takes turns.
    user_set_available(user=member, available=True)
    client.post(routing_url(inbox), {"mode": "round_robin", "source": "team", "team": team.pk})
    rule = RoutingRule.objects.get(inbox=inbox)
    assert rule.team == team and list(rule.users.all()) == []
    make_conversation(inbox)
    make_conversation(inbox)
    assert assignees(inbox)[-2:] == ["Cy Young", "Cy Young"]

    # Off again: new conversations wait, unassigned.
    response = client.post(routing_url(inbox), {"mode": "none", "source": "team", "team": team.pk})
    assert response.status_code == 302
    make_conversation(inbox)
    assert assignees(inbox)[-1] is None


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ({"mode": "round_robin", "source": "users"}, "tick at least one person"),
        ({"mode": "round_robin", "source": "team", "team": ""}, "Choose the team"),
        ({"mode": "sometimes", "source": "users"}, "Choose how new conversations are assigned"),
        (
            {"mode": "round_robin", "source": "users", "users": ["nope"]},
            "no longer in this account",
        ),
    ],
)
def test_routing_mistakes_are_explained_and_nothing_is_saved(client, admin, inbox, data, says):
    client.force_login(admin)
    response = client.post(routing_url(inbox), data)
    assert response.status_code == 400
    assert says in response.content.decode()
    assert not RoutingRule.objects.exists()


def test_a_team_without_members_cannot_take_turns(client, admin, account, inbox):
    empty = Team.objects.create(account=account, name="Nobody yet")
    client.force_login(admin)
    response = client.post(
        routing_url(inbox), {"mode": "round_robin", "source": "team", "team": empty.pk}
    )
    assert response.status_code == 400
    assert "Team Nobody yet has no members yet" in response.content.decode()
    assert not RoutingRule.objects.exists()


def test_another_accounts_people_cannot_be_chosen(client, admin, outsider, inbox):
    client.force_login(admin)
    response = client.post(
        routing_url(inbox), {"mode": "round_robin", "source": "users", "users": [outsider.pk]}
    )
    assert response.status_code == 400
    assert "no longer in this account" in response.content.decode()
    assert not RoutingRule.objects.exists()


# --- Visibility, from-name and signature -----------------------------------------------------------


def test_restricting_the_inbox_to_a_team_hides_it_from_a_member_outside_the_team(
    client, admin, member, other_member, inbox, team
):
    client.force_login(admin)
    url = f"/settings/inboxes/{inbox.pk}/visibility/"
    response = client.post(url, {"visibility": "teams", "teams": [team.pk]}, follow=True)
    assert "Only admins and the members of Tier 1 now see Support." in response.content.decode()
    assert inbox not in inboxes_visible_to(member)
    assert inbox in inboxes_visible_to(other_member)
    assert inbox in inboxes_visible_to(admin)
    client.force_login(member)
    assert client.get(overview_url(inbox)).status_code == 404
    client.force_login(other_member)
    assert client.get(overview_url(inbox)).status_code == 200

    client.force_login(admin)
    response = client.post(url, {"visibility": "teams"})
    assert response.status_code == 400
    assert "Choose at least one team" in response.content.decode()
    client.post(url, {"visibility": "everyone"})
    assert inbox in inboxes_visible_to(member)


def test_from_name_and_signature_are_saved(client, admin, inbox):
    client.force_login(admin)
    url = f"/settings/inboxes/{inbox.pk}/replies/"
    response = client.post(url, {"from_name": " Acme Support ", "signature": "The Acme team\n"})
    assert response.status_code == 302
    inbox.refresh_from_db()
    assert (inbox.from_name, inbox.signature) == ("Acme Support", "The Acme team")
    response = client.post(url, {"from_name": "x" * 201, "signature": ""})
    assert response.status_code == 400
    assert "at most 200 characters" in response.content.decode()
    inbox.refresh_from_db()
    assert inbox.from_name == "Acme Support"


def test_from_name_and_signature_lengths_are_the_services_rule_not_cut_short(admin, inbox):
    # Given an inbox with a from-name
    services.inbox_update(actor=admin, inbox=inbox, from_name="Acme Support")

    # When anything (the page, the API) asks the service for a longer one
    for changes, field in (
        ({"from_name": "x" * 201}, "from_name"),
        ({"signature": "x" * 5001}, "signature"),
    ):
        with pytest.raises(Invalid) as refused:
            services.inbox_update(actor=admin, inbox=inbox, **changes)

        # Then it is refused with the field named, and nothing is cut short and saved
        assert field in refused.value.extra["errors"]
        assert "at most" in refused.value.detail
    inbox.refresh_from_db()
    assert (inbox.from_name, inbox.signature) == ("Acme Support", "")


# --- Teams ---------------------------------------------------------------------------------------


def test_teams_are_created_renamed_changed_and_deleted_on_the_page(
    client, admin, member, other_member, inbox
):
    client.force_login(admin)
    assert "No teams yet" in client.get("/settings/teams/").content.decode()

    response = client.post(
        "/settings/teams/new/", {"name": "Tier 1", "members": [member.pk]}, follow=True
    )
    assert "Team Tier 1 is created with 1 member." in response.content.decode()
    team = Team.objects.get(name="Tier 1")
    assert list(team.members.all()) == [member]

    response = client.post("/settings/teams/new/", {"name": "Tier 1"})
    assert response.status_code == 400
    assert "There is already a team called Tier 1." in response.content.decode()
    response = client.post("/settings/teams/new/", {"name": "  "})
    assert response.status_code == 400
    assert "The team needs a name." in response.content.decode()
    assert Team.objects.count() == 1

    response = client.post(
        f"/settings/teams/{team.pk}/",
        {"name": "First line", "members": [member.pk, other_member.pk]},
        follow=True,
    )
    assert "Team First line is saved." in response.content.decode()
    team.refresh_from_db()
    assert team.name == "First line"
    assert set(team.members.all()) == {member, other_member}

    # The page shows where the team is used, and deleting it says what that changes.
    client.post(routing_url(inbox), {"mode": "round_robin", "source": "team", "team": team.pk})
    html = client.get("/settings/teams/").content.decode()
    assert "round-robin of Support" in html
    response = client.post(f"/settings/teams/{team.pk}/delete/", {"confirm": "yes"}, follow=True)
    html = response.content.decode()
    assert "Team First line is deleted." in html
    assert "Round-robin of Support has nobody to assign to now" in html
    assert not Team.objects.exists()


def test_a_team_name_over_200_characters_is_refused_on_the_page_as_by_the_api(client, admin):
    # Given an admin on the Teams page
    client.force_login(admin)

    # When she creates a team whose name is longer than the API allows
    response = client.post("/settings/teams/new/", {"name": "x" * 201})

    # Then the page refuses it as the API does, and no team is made
    assert response.status_code == 400
    assert "The team name is too long: use at most 200 characters." in response.content.decode()
    assert not Team.objects.exists()


# --- The overview --------------------------------------------------------------------------------


def test_the_overview_numbers_match_the_data(client, admin, member, inbox):
    conversations = [make_conversation(inbox) for _ in range(3)]
    first = conversations[0]
    Conversation.objects.filter(pk=first.pk).update(
        assignee=member, first_response_at=first.created_at + timedelta(hours=2, minutes=5)
    )
    conversation_set_status(actor=admin, conversation=first, status="closed")
    Conversation.objects.filter(pk=first.pk).update(closed_at=first.created_at + timedelta(hours=3))
    # Bo has a second conversation: still one row for Bo in the per-agent table.
    Conversation.objects.filter(pk=conversations[1].pk).update(assignee=member)
    client.force_login(admin)

    response = client.get(overview_url(inbox))
    assert response.status_code == 200
    context = response.context
    opened, closed = context["opened_chart"], context["closed_chart"]
    assert len(opened["bars"]) == 14 and opened["total"] == 3 and opened["bars"][-1]["value"] == 3
    assert closed["total"] == 1 and closed["bars"][-1]["value"] == 1
    assert context["first_response"] == {"count": 1, "median": "2 h 5 min", "mean": "2 h 5 min"}
    assert context["time_to_close"]["median"] == "3 h"
    assert (context["open_now"], context["unassigned_now"]) == (2, 1)
    [bo] = context["agents"]
    assert (bo["name"], bo["opened"], bo["closed"]) == ("Bo Lee", 2, 1)
    assert (bo["first_response"], bo["time_to_close"]) == ("2 h 5 min", "3 h")
    html = response.content.decode()
    assert html.count('class="chart-value"') == 14 * 2 + 14  # two charts and Bo's sparkline
    assert ": 3 opened</title>" in html and "2 h 5 min" in html
    assert 'style="' not in html  # the CSP forbids inline styles

    assert len(client.get(overview_url(inbox, 7)).context["opened_chart"]["bars"]) == 7
    assert len(client.get(overview_url(inbox, 30)).context["opened_chart"]["bars"]) == 30
    assert client.get(overview_url(inbox, "lots")).context["days"] == 14
    assert client.get(overview_url(inbox, 365)).context["days"] == 14


def test_settings_pages_render_without_inline_styles(client, admin, inbox, team):
    client.force_login(admin)
    for url in [routing_url(inbox), "/settings/teams/", "/settings/inboxes/", "/settings/users/"]:
        response = client.get(url)
        assert response.status_code == 200, url
        assert 'style="' not in response.content.decode(), url
    assert routing_url(inbox) in client.get("/settings/inboxes/").content.decode()
    assert "/settings/teams/" in client.get("/settings/users/").content.decode()


# --- The helpers -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "—"),
        (0, "0 s"),
        (45, "45 s"),
        (60, "1 min"),
        (12 * 60 + 59, "12 min"),
        (3600, "1 h"),
        (2 * 3600 + 5 * 60, "2 h 5 min"),
        (24 * 3600, "1 d"),
        (3 * 86400 + 4 * 3600 + 59, "3 d 4 h"),
    ],
)
def test_durations_read_like_people_write_them(seconds, text):
    assert duration_text(seconds) == text


def test_bar_chart_scales_to_a_round_top_and_labels_every_bar():
    assert [_nice_ceiling(v) for v in (0, 1, 2, 3, 5, 6, 11, 41, 120)] == [
        1,
        1,
        2,
        4,
        5,
        10,
        20,
        50,
        200,
    ]
    chart = bar_chart([0, 2, 3], ["a", "b", "c"], chart_id="c", title="T")
    assert [g["value"] for g in chart["grid"]] == [0, 2, 4]
    assert [b["title"] for b in chart["bars"]] == ["a: 0", "b: 2", "c: 3"]
    tallest = chart["bars"][2]
    assert tallest["height"] == pytest.approx(chart["plot_height"] * 3 / 4, abs=0.01)
    assert chart["bars"][0]["height"] == 0
    assert chart["desc"] == "5 in all; the most, 3, on c."
    empty = bar_chart([0, 0], ["a", "b"], chart_id="e", title="T", spark=True)
    assert empty["desc"] == "None in this period." and all(b["height"] == 1 for b in empty["bars"])


def test_the_overview_of_a_quiet_inbox(client, member, inbox):
    client.force_login(member)
    response = client.get(overview_url(inbox))
    assert response.status_code == 200
    html = response.content.decode()
    assert "None in this period." in html and "No conversation of these 14 days" in html
    now = timezone.localdate()
    assert response.context["last_day"] == now
