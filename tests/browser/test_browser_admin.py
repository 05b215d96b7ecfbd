"""Settings as one area, and the invite flow, in Chromium at 1440 x 900 and 390 px wide
(the ``pages`` fixture fails a test on console errors, CSP violations and requests that
leave 127.0.0.1)."""

from __future__ import annotations

import re

import pytest
from django.core import mail
from playwright.sync_api import expect

from accounts.models import User

pytest_plugins = ["tests.support.browser"]  # the browser and pages fixtures
pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WIDE = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}
NEW_PASSWORD = "a kettle of green tea at dawn"


def _no_sideways_scroll(page) -> None:
    page.wait_for_load_state("load")
    overflow = page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    wide = page.evaluate(
        """() => [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > document.documentElement.clientWidth + 1).slice(0, 8).map(e => e.tagName + '#' + e.id + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right))"""
    )
    assert overflow <= 0, f"{page.url} scrolls sideways by {overflow}px: {wide}"


def test_settings_is_one_area_with_admin_sections_for_admins_only(pages, admin, member, password):
    # Given Ann, an admin, on a wide screen
    page = pages.log_in(admin.email, password)
    page.set_viewport_size(WIDE)
    nav = page.get_by_role("navigation", name="Settings sections")
    expect(nav.get_by_role("link")).to_have_text(
        [
            "Your email",
            "Meetings",
            "Email preferences",
            "Notifications",
            "API tokens",
            "Inboxes",
            "Teams",
            "Users",
            "Audit log",
        ]
    )
    # When she walks through the sections, each page keeps the navigation, its own entry current
    for name, heading in [
        ("API tokens", "API tokens"),
        ("Inboxes", "Conversations inboxes"),
        ("Teams", "Teams"),
        ("Users", "Users"),
        ("Audit log", "Audit log"),
        ("Notifications", "Notification settings"),
        ("Your email", "Your email"),
    ]:
        nav.get_by_role("link", name=name, exact=True).click()
        expect(page.get_by_role("heading", name=heading, level=1)).to_be_visible()
        expect(nav.locator("[aria-current=page]")).to_have_text(name)
        expect(
            page.get_by_role("navigation", name="Main").get_by_role("link", name="Settings")
        ).to_have_class("active")
        _no_sideways_scroll(page)
    pages.screenshot(page, "settings-wide")

    # And on a phone the same pages fit the width
    page.set_viewport_size(PHONE)
    for path in [
        "/settings/users/",
        "/settings/audit/",
        "/settings/tokens/",
        "/settings/inboxes/new/",
    ]:
        page.goto(path)
        expect(nav).to_be_visible()
        _no_sideways_scroll(page)
    pages.screenshot(page, "settings-phone")

    # Given Bo, a member: his Settings has no admin sections
    bo = pages.log_in(member.email, password)
    bo.set_viewport_size(PHONE)
    bo_nav = bo.get_by_role("navigation", name="Settings sections")
    expect(bo_nav.get_by_role("link")).to_have_text(
        ["Your email", "Meetings", "Email preferences", "Notifications", "API tokens"]
    )
    _no_sideways_scroll(bo)


def test_an_admin_invites_a_user_who_sets_a_password_from_the_email_and_logs_in(
    pages, admin, password
):
    # Given Ann on Settings > Users
    page = pages.log_in(admin.email, password)
    page.set_viewport_size(WIDE)
    page.get_by_role("navigation", name="Settings sections").get_by_role(
        "link", name="Users"
    ).click()

    # When she invites Dee by email
    invite = page.locator("#invite-user")
    invite.get_by_label("Email").fill("dee@acme.example.com")
    invite.get_by_label("Full name").fill("Dee Park")
    invite.get_by_role("button", name="Send invitation").click()

    # Then Dee is listed as invited, and an email with a link is sent
    expect(page.locator("#messages")).to_contain_text("dee@acme.example.com is invited")
    dee = User.objects.get(email="dee@acme.example.com")
    expect(page.locator(f"#user-{dee.pk}")).to_contain_text("Invitation pending")
    [sent] = mail.outbox
    [link] = re.findall(r"https?://[^/\s]+(/invite/\S+/)", sent.body)

    # When Dee opens the link on her phone and chooses a password
    dee_page = pages.new()
    dee_page.set_viewport_size(PHONE)
    dee_page.goto(link)
    expect(dee_page.get_by_role("heading", name="Welcome, Dee Park")).to_be_visible()
    _no_sideways_scroll(dee_page)
    dee_page.get_by_label("New password").fill(NEW_PASSWORD)
    dee_page.get_by_label("Repeat the password").fill(NEW_PASSWORD)
    dee_page.get_by_role("button", name="Set password and log in").click()

    # Then she is logged in, on her email settings
    dee_page.wait_for_url("**/settings/email/")
    expect(dee_page.locator("header .who")).to_contain_text("Dee Park · Acme")

    # And she can log in again with that password, while the link no longer works
    again = pages.log_in("dee@acme.example.com", NEW_PASSWORD)
    pages.problems.expect_console_error(r"status of 400")
    again.goto(link)
    expect(
        again.get_by_role("heading", name="This invitation link doesn't work any more")
    ).to_be_visible()
    page.reload()
    expect(page.locator(f"#user-{dee.pk}")).to_contain_text("Active")
