"""Destructive actions ask first in a <dialog>, and a broken team email shows where the
team works: in a real browser (Chromium, the strict CSP) at 1440 and 390 px wide. The
``pages`` fixture fails a test on any console error, CSP violation or request that
leaves 127.0.0.1. The same rules without JavaScript: tests/conversations/
test_confirm_destructive.py and tests/inboxes/test_mailbox_problems_web.py."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from conversations.models import Conversation
from inboxes.models import Inbox
from inboxes.providers.base import ProviderError
from inboxes.sync.run import mailbox_sync
from tests.support.conversations_factory import make_conversation

pytest_plugins = ["tests.support.browser"]  # the browser and pages fixtures
pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WIDE = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}


def no_sideways_scroll(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_deleting_an_inbox_asks_in_a_dialog_that_wants_its_name(pages, admin, password):
    inbox = Inbox.objects.create(account=admin.account, name="Support")
    for _ in range(3):
        make_conversation(inbox)
    page = pages.log_in(admin.email, password)
    page.set_viewport_size(WIDE)
    page.goto("/settings/inboxes/")
    card = page.locator(f"#inbox-{inbox.pk}")
    delete = card.get_by_role("button", name="Delete inbox")

    # When Ann clicks Delete inbox, a dialog says what will be lost and wants the name
    delete.click()
    dialog = page.locator("dialog#confirm-dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text(
        "Delete inbox Support: 3 conversations and their messages will be deleted"
    )
    typed = dialog.get_by_label("Type Support to confirm")
    go = dialog.get_by_role("button", name="Delete inbox Support")
    expect(typed).to_be_focused()
    expect(go).to_be_disabled()
    pages.screenshot(page, "confirm-delete-inbox")

    # Focus stays in the dialog, and Escape cancels, giving focus back to the button
    for _ in range(5):
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.closest('dialog') !== null")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(delete).to_be_focused()
    assert Inbox.objects.filter(pk=inbox.pk).exists()

    # At 390 px the dialog fits, the page does not scroll sideways
    page.set_viewport_size(PHONE)
    delete.click()
    expect(dialog).to_be_visible()
    assert no_sideways_scroll(page)
    box = dialog.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]

    # A wrong name keeps the button off; the right one deletes the inbox
    typed.fill("Suport")
    expect(go).to_be_disabled()
    typed.fill("Support")
    expect(go).to_be_enabled()
    go.click()
    expect(page.locator("#messages")).to_have_text("Inbox Support is deleted.")
    assert not Inbox.objects.filter(pk=inbox.pk).exists()
    assert not Conversation.objects.exists()


def test_a_refused_password_shows_in_the_inbox_and_the_composer(
    pages, admin, member, password, support, dovecot, mail_user
):
    inbox, mailbox = support
    conversation = make_conversation(inbox)
    # Given the owner changed the team email's password on the mail server
    dovecot.add_user(mail_user[0], "changed-by-the-owner")
    with pytest.raises(ProviderError):
        mailbox_sync(mailbox.pk)
    said = "Replies from support@acme.example.com can't be sent: the password was refused."

    # When Bo (a member) opens the conversation, at 1440 and at 390 px
    page = pages.log_in(member.email, password)
    for size in (WIDE, PHONE):
        page.set_viewport_size(size)
        page.goto(f"/inbox/c/{conversation.pk}/")
        # Then the page and the reply box say it, and tell him to ask an admin
        expect(page.locator("#mail-banners")).to_contain_text(f"{said} Ask an admin to reconnect.")
        expect(page.locator("#composer .mail-banner")).to_contain_text(said)
        expect(page.get_by_role("link", name="Reconnect")).to_have_count(0)
        assert no_sideways_scroll(page)
    pages.screenshot(page, "broken-mail-banner-phone")

    # And Ann (an admin) gets the Reconnect link to the server settings
    page = pages.log_in(admin.email, password)
    page.set_viewport_size(WIDE)
    page.goto(f"/inbox/c/{conversation.pk}/")
    page.locator("#composer").get_by_role("link", name="Reconnect").click()
    expect(page.locator("#server-settings")).to_be_visible()
    expect(page.locator(f"#mailbox-{mailbox.pk} .badge")).to_have_text("Not working")
    expect(page.locator(f"#mailbox-{mailbox.pk}")).to_contain_text("The password was refused.")
    page.set_viewport_size(PHONE)
    expect(page.locator("#server-settings")).to_be_visible()
    assert no_sideways_scroll(page)
