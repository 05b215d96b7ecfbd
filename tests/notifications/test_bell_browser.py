"""The bell in a real browser: its count on every page, updated without a reload, and
the notifications page with mark-read (Chromium, htmx, the strict CSP)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from inboxes import events
from inboxes.models import Mailbox, MailboxKind, MailboxStatus

pytest_plugins = ["tests.support.browser"]
pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def break_mailbox(owner, name: str) -> Mailbox:
    mailbox = Mailbox.objects.create(
        account=owner.account,
        address=f"{name}@acme.example.com",
        canonical_address=f"{name}@acme.example.com",
        kind=MailboxKind.PERSONAL,
        owner=owner,
        status=MailboxStatus.NEEDS_REAUTH,
        last_error="The grant was revoked",
    )
    events.report_mailbox_health(mailbox.pk)
    return mailbox


def test_the_bell_counts_updates_without_a_reload_and_marks_read(pages, member, password, settings):
    settings.NOTIFICATION_POLL_SECONDS = 1
    first = break_mailbox(member, "bo.one")
    page = pages.log_in(member.email, password)
    page.goto("/settings/email/")
    bell = page.locator("#bell")
    expect(bell.locator(".count")).to_have_text("1")
    expect(bell).to_have_attribute("aria-label", "Notifications: 1 unread")

    # Something else breaks while the page is open: the count follows, no reload.
    break_mailbox(member, "bo.two")
    expect(page.locator("#bell .count")).to_have_text("2", timeout=10_000)
    pages.screenshot(page, "bell")

    page.locator("#bell").click()
    expect(page.get_by_role("heading", name="Notifications", level=1)).to_be_visible()
    items = page.locator("#notifications .notification.unread")
    expect(items).to_have_count(2)
    expect(items.first).to_contain_text("bo.two@acme.example.com")
    expect(items.first).to_contain_text("Sign in again")
    pages.screenshot(page, "notifications")

    # Opening one marks it read and goes to the mailbox's page.
    page.locator("#notifications .notification").nth(1).get_by_role("button", name="Open").click()
    expect(page).to_have_url(f"{pages.base_url}/settings/mailboxes/{first.pk}/")
    expect(page.locator("#bell .count")).to_have_text("1")

    page.goto("/notifications/")
    page.get_by_role("button", name="Mark all as read").click()
    expect(page.locator("#messages")).to_contain_text("Marked 1 notification(s) as read.")
    expect(page.locator("#bell .count")).to_have_count(0)
    expect(page.locator("#notifications .notification.unread")).to_have_count(0)


def test_the_notification_pages_fit_a_phone(pages, member, password):
    break_mailbox(member, "bo.one")
    page = pages.log_in(member.email, password)
    page.set_viewport_size({"width": 390, "height": 844})
    for path in ("/notifications/", "/settings/notifications/"):
        page.goto(path)
        content = page.locator("main")
        width = content.evaluate("e => e.scrollWidth")
        assert width <= 390, f"{path} is {width} px wide"
        pages.screenshot(page, "notifications-390" if "settings" not in path else "nsettings-390")
    page.get_by_label("A conversation was assigned to me: by email").uncheck()
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#messages")).to_contain_text("Notification settings saved.")
    expect(page.get_by_label("A conversation was assigned to me: by email")).not_to_be_checked()
    expect(page.get_by_label("A conversation was assigned to me: in the app")).to_be_checked()
