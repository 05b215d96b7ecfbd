"""Teams, routing and the inbox overview in a real browser (Chromium, htmx and the
strict CSP) against the live server. The ``pages`` fixture fails a test on any
console error, uncaught JavaScript error, CSP violation or request that leaves
127.0.0.1. Set POSTKAMER_SCREENSHOTS=1 to keep screenshots in /tmp.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from playwright.sync_api import expect

from accounts import services as account_services
from accounts.models import Team
from audit.models import AuditEvent
from conversations.handling import conversation_set_status
from conversations.models import Conversation, RoutingRule
from inboxes import services as mailbox_services
from inboxes.models import Inbox
from meetings import services as meetings_services
from meetings.models import MeetingsConnection
from tests.support.conversations_factory import make_conversation
from tests.support.mail import connect_imap_mailbox

pytest_plugins = ["tests.support.browser"]  # the browser and pages fixtures
pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_an_admin_sets_up_a_team_and_round_robin_on_the_pages(
    pages, admin, member, other_member, password
):
    # Given an inbox without routing
    inbox = Inbox.objects.create(account=admin.account, name="Support")
    page = pages.log_in(admin.email, password)

    # When Ann creates a team from Settings > Users > Teams
    page.goto("/settings/users/")
    page.get_by_role("link", name="Teams").click()
    expect(page.get_by_role("heading", name="Teams", level=1)).to_be_visible()
    create = page.locator("#create-team")
    create.get_by_label("Team name").fill("Tier 1")
    create.get_by_label("Bo Lee").check()
    create.get_by_label("Cy Young").check()
    create.get_by_role("button", name="Create team").click()

    # Then the team is listed with its members
    expect(page.locator("#messages")).to_contain_text("Team Tier 1 is created with 2 members.")
    team = Team.objects.get(name="Tier 1")
    card = page.locator(f"#team-{team.pk}")
    expect(card.locator(".person")).to_have_text(["Bo Lee", "Cy Young"])
    assert set(team.members.all()) == {member, other_member}
    pages.screenshot(page, "teams")

    # When she turns on round-robin among the team's members
    page.goto("/settings/inboxes/")
    page.locator(f"#inbox-{inbox.pk}").get_by_role("link", name="Routing").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Support: routing and access")
    expect(page.locator("#turns-off")).to_be_visible()
    form = page.locator("#routing-form")
    form.get_by_label("Round-robin").check()
    form.get_by_label("The members of a team").check()
    form.get_by_label("Team", exact=True).select_option(label="Tier 1 (2 people)")
    form.get_by_role("button", name="Save routing").click()

    # Then the page says whose turn is next, and new conversations take turns
    expect(page.locator("#messages")).to_contain_text(
        "go round-robin to the members of team Tier 1"
    )
    expect(page.locator("#next-turn")).to_have_text("Next: Bo Lee")
    rule = RoutingRule.objects.get(inbox=inbox)
    assert (rule.mode, rule.team) == ("round_robin", team)
    pages.screenshot(page, "routing")
    make_conversation(inbox)
    make_conversation(inbox)
    assert list(
        Conversation.objects.order_by("created_at", "id").values_list(
            "assignee__full_name", flat=True
        )
    ) == ["Bo Lee", "Cy Young"]
    page.reload()
    expect(page.locator("#next-turn")).to_have_text("Next: Bo Lee")
    expect(page.locator(".turn", has_text="Cy Young")).to_contain_text("Had the last one")

    # And a mistake is explained in plain words (the page comes back as a 400)
    pages.problems.expect_console_error(r"status of 400")
    form.get_by_label("People I choose").check()
    for box in form.locator("input[name=users]").all():
        box.uncheck()
    form.get_by_role("button", name="Save routing").click()
    expect(page.locator("#routing [role=alert]")).to_contain_text("tick at least one person")
    assert RoutingRule.objects.get(inbox=inbox).team == team


def test_the_overview_draws_its_charts(pages, admin, member, password):
    # Given an inbox with three conversations today, one answered and closed
    inbox = Inbox.objects.create(account=admin.account, name="Support")
    first, *_ = [make_conversation(inbox) for _ in range(3)]
    Conversation.objects.filter(pk=first.pk).update(
        assignee=member, first_response_at=first.created_at + timedelta(hours=2, minutes=5)
    )
    conversation_set_status(actor=admin, conversation=first, status="closed")
    page = pages.log_in(admin.email, password)

    # When Ann opens the overview from Settings > Inboxes
    page.goto("/settings/inboxes/")
    page.locator(f"#inbox-{inbox.pk}").get_by_role("link", name="Overview").click()

    # Then both charts have a bar per day, today's with the right height order
    expect(page.get_by_role("heading", level=1)).to_have_text("Support: overview")
    opened = page.locator("#chart-opened svg rect.chart-value")
    closed = page.locator("#chart-closed svg rect.chart-value")
    expect(opened).to_have_count(14)
    expect(closed).to_have_count(14)
    assert float(opened.last.get_attribute("height")) > float(closed.last.get_attribute("height"))
    assert float(closed.last.get_attribute("height")) > 0
    expect(page.locator("#stat-opened .stat-value")).to_have_text("3")
    expect(page.locator("#stat-closed .stat-value")).to_have_text("1")
    expect(page.locator("#stat-first-response .stat-value")).to_have_text("2 h 5 min")
    expect(page.locator("#agents tbody tr")).to_have_count(1)
    expect(page.locator("#agents tbody tr svg rect.chart-value")).to_have_count(14)
    box = page.locator("#chart-opened svg").bounding_box()
    assert box and box["width"] > 300 and box["height"] > 100
    pages.screenshot(page, "overview")

    # When she picks the last 7 days, the charts redraw with 7 bars
    page.get_by_role("link", name="7 days").click()
    expect(page).to_have_url(re.compile(r"\?days=7$"))
    expect(opened).to_have_count(7)

    # And a member sees the same overview
    member_page = pages.log_in(member.email, password)
    member_page.goto(f"/inbox/overview/{inbox.pk}/?days=30")
    expect(member_page.locator("#chart-opened svg rect.chart-value")).to_have_count(30)
    expect(member_page.get_by_role("link", name="Routing and access")).to_have_count(0)
    pages.screenshot(member_page, "overview-30")


def test_an_admin_releases_a_deactivated_users_meetings_address_on_settings_users(
    pages, admin, member, password, dovecot, smtp_server, mail_user
):
    # Given Bo booked meetings from bo@ (his email, removed since: the meetings tool
    # keeps the address), and was deactivated since
    mailbox = connect_imap_mailbox(
        actor=member,
        dovecot=dovecot,
        smtp_server=smtp_server,
        user=mail_user,
        address="bo@acme.example.com",
        kind="personal",
    )
    meetings_services.meetings_connect(user=member, address="bo@acme.example.com")
    mailbox_services.mailbox_disconnect(actor=member, mailbox=mailbox)
    account_services.user_deactivate(actor=admin, user=member)

    # When Ann opens Settings > Users
    page = pages.log_in(admin.email, password)
    page.goto("/settings/users/")

    # Then Bo's row lists the address as held by the meetings tool, with a Release button
    held = page.locator(f"#user-{member.pk} .tool-hold")
    expect(held).to_contain_text("bo@acme.example.com")
    expect(held).to_contain_text("Meetings tool")

    # When she releases it
    held.get_by_role("button", name="Release bo@acme.example.com from the meetings tool").click()

    # Then the address is free and Bo's row lists nothing
    expect(page.locator("#messages")).to_have_text(
        "bo@acme.example.com is released and can be connected again."
    )
    expect(page.locator(f"#user-{member.pk}")).to_contain_text("None")
    assert not MeetingsConnection.objects.exists()
    assert AuditEvent.objects.filter(action="meetings.released").exists()
