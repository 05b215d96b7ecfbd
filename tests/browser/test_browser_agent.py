"""The agent's composer in Chromium, at 1440x900 and 390 px: the note box's @mention
autocomplete driven by the keyboard, and the reply's formatting with a saved reply,
then closing on to the next conversation. The ``pages`` fixture fails a test on any
console error or Content-Security-Policy violation."""

from __future__ import annotations

import re

import pytest
from django.conf import settings
from django.test import Client
from playwright.sync_api import Page, expect

from conversations.models import Conversation, Note, SavedReply
from inboxes.models import Inbox, Mailbox, OutboxItem
from tests.support.conversations_factory import make_conversation
from tests.support.factories import UserFactory

pytest_plugins = ["tests.support.browser"]
pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SUPPORT = "support@acme.example.com"
SIZES = [(1440, 900), (390, 844)]


@pytest.fixture
def support(account):
    mailbox = Mailbox.objects.create(
        account=account,
        kind="team",
        address=SUPPORT,
        canonical_address=SUPPORT,
        imap_host="imap.acme.example.com",
        status="connected",
    )
    return Inbox.objects.create(
        account=account, name="Support", mailbox=mailbox, from_name="Acme Support"
    )


def open_page(pages, user, path: str, size: tuple[int, int]) -> Page:
    client = Client()
    client.force_login(user)
    page = pages.new()
    page.set_viewport_size({"width": size[0], "height": size[1]})
    name = settings.SESSION_COOKIE_NAME
    page.context.add_cookies(
        [{"name": name, "value": client.cookies[name].value, "url": pages.base_url}]
    )
    page.goto(path)
    return page


def no_sideways_scroll(page: Page) -> None:
    assert page.evaluate(
        "document.documentElement.scrollWidth <= document.documentElement.clientWidth"
    )


@pytest.mark.parametrize("size", SIZES, ids=["1440", "390"])
def test_a_mention_is_picked_with_the_keyboard_and_saved(
    pages, admin, member, other_member, account, support, size
):
    UserFactory(account=account, email="cyd@acme.example.com", full_name="Cyd Charisse")
    conversation = make_conversation(support, subject="Printer on fire")
    page = open_page(pages, member, f"/inbox/c/{conversation.pk}/", size)
    page.locator("label[for=mode-note]").click()
    box = page.locator("#note-text")
    box.click()
    expect(box).to_have_attribute("role", "combobox")

    # Typing "@cy" offers the two people whose names start so, the first one active
    box.press_sequentially("Over to @cy")
    listbox = page.get_by_role("listbox", name="People who can see this inbox")
    expect(listbox).to_be_visible()
    expect(box).to_have_attribute("aria-expanded", "true")
    options = listbox.get_by_role("option")
    expect(options).to_have_count(2)
    expect(options.nth(0)).to_have_attribute("aria-selected", "true")
    no_sideways_scroll(page)
    pages.screenshot(page, f"agent-mention-{size[0]}")

    # ArrowDown moves to the second, Enter picks it; the box keeps the focus
    box.press("ArrowDown")
    expect(options.nth(1)).to_have_attribute("aria-selected", "true")
    chosen = options.nth(1).locator(".mention-name").inner_text()
    handle = "cyd" if chosen == "Cyd Charisse" else "cy"
    expect(box).to_have_attribute("aria-activedescendant", "mention-option-1")
    box.press("Enter")
    expect(listbox).to_be_hidden()
    expect(box).to_have_value(f"Over to @{handle} ")
    expect(box).to_be_focused()

    # Escape closes the list without leaving the box
    box.press_sequentially("and @a")
    expect(listbox).to_be_visible()
    box.press("Escape")
    expect(listbox).to_be_hidden()
    expect(box).to_be_focused()

    # Ctrl+Enter saves the note: the mention is highlighted, the box empty again. (The
    # header is swapped with it: a style set from script on its select, as browser
    # extensions do, must not make htmx write a style attribute, which the CSP refuses.)
    page.evaluate("document.getElementById('assignee').style.minWidth = '12rem'")
    box.press_sequentially("nn please")
    box.press("Control+Enter")
    note = page.locator(".item.note")
    expect(note.locator("mark.mention")).to_have_count(2)
    expect(note.locator("mark.mention").first).to_have_text(f"@{handle}")
    expect(box).to_have_value("")
    saved = Note.objects.get()
    assert {u.email for u in saved.mentions.all()} == {
        f"{handle}@acme.example.com",
        "ann@acme.example.com",
    }
    no_sideways_scroll(page)


@pytest.mark.parametrize("size", SIZES, ids=["1440", "390"])
def test_a_formatted_reply_with_a_saved_reply_then_close_moves_on(pages, member, support, size):
    SavedReply.objects.create(
        inbox=support,
        name="Thanks",
        body="Hi {{customer.first_name}}, thanks for writing to {{inbox.name}}.",
    )
    older = make_conversation(support, subject="Older question", sender_name="Dave Doe")
    newer = make_conversation(support, subject="Refund please", sender_name="Carol Danvers")
    page = open_page(pages, member, f"/inbox/c/{newer.pk}/?view=open", size)
    editor = page.get_by_role("textbox", name="Reply")
    expect(editor).to_be_visible()
    expect(page.locator("#reply-text")).to_be_hidden()

    # A saved reply goes in with the customer's and the inbox's names
    page.get_by_label("Insert a saved reply").select_option(label="Thanks")
    expect(editor).to_contain_text("Hi Carol, thanks for writing to Support.")
    # Then a bold word after it
    editor.press("End")
    editor.press_sequentially(" It is ")
    page.get_by_role("button", name="Bold").click()
    editor.press_sequentially("done")
    page.get_by_role("button", name="Bold").click()
    editor.press_sequentially(".")
    expect(editor.locator("b")).to_have_text("done")
    page.get_by_label("Attach files").set_input_files(
        {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"refund id 42\n"}
    )
    no_sideways_scroll(page)
    pages.screenshot(page, f"agent-composer-{size[0]}")
    page.get_by_role("button", name="Send reply").click()

    # The reply is in the thread, sent as sanitised HTML with a text part
    sent = page.locator(".item.message.outbound")
    expect(sent).to_contain_text("Queued")
    expect(sent.frame_locator("iframe").locator("b")).to_have_text("done")
    item = OutboxItem.objects.get()
    assert "<b>done</b>" in item.message.html
    assert item.message.text.startswith("Hi Carol, thanks for writing to Support. It is done.")
    assert [a.filename for a in item.message.attachments.all()] == ["notes.txt"]
    # Replying took the unassigned conversation
    expect(page.get_by_label("Assignee")).to_have_value(str(member.pk))
    expect(editor).to_have_text("")

    # Closing moves on to the next conversation of the list
    page.get_by_role("button", name="Close", exact=True).click()
    expect(page.locator("#conv-header h2")).to_have_text("Older question")
    expect(page).to_have_url(re.compile(rf"/inbox/c/{older.pk}/\?view=open$"))
    assert Conversation.objects.get(pk=newer.pk).status == "closed"
    no_sideways_scroll(page)

    # Snoozing it until tomorrow: it says until when, and leaves the open list
    page.locator("#snooze > summary").click()
    no_sideways_scroll(page)
    pages.screenshot(page, f"agent-snooze-{size[0]}")
    page.get_by_role("button", name=re.compile(r"^Tomorrow")).click()
    expect(page.locator("#snoozed-until")).to_contain_text("Snoozed until")
    assert Conversation.objects.get(pk=older.pk).snoozed_until is not None
    page.goto("/inbox/?view=open")
    expect(page.locator("#conv-list .row")).to_have_count(0)


def test_an_admin_keeps_saved_replies_on_a_phone(pages, admin, support):
    page = open_page(pages, admin, f"/settings/inboxes/{support.pk}/agent-replies/", (390, 844))
    page.get_by_label("Name").fill("Refund")
    page.locator("#new-body").fill("Hi {{customer.first_name}}, the refund is on its way.")
    page.get_by_role("button", name="Add saved reply").click()
    expect(page.locator("#messages")).to_contain_text("Saved reply “Refund” saved.")
    expect(page.locator("details.saved-reply > summary")).to_contain_text("Refund")
    no_sideways_scroll(page)
    # A wrong variable is refused (400) with the ones that exist
    pages.problems.expect_console_error(r"status of 400 .*/saved-replies/")
    page.get_by_label("Name").last.fill("Bad")
    page.locator("#new-body").fill("Hi {{customer.nick}}")
    page.get_by_role("button", name="Add saved reply").click()
    expect(page.locator("#saved-reply-error")).to_contain_text("Unknown variable {{customer.nick}}")
    no_sideways_scroll(page)
    pages.screenshot(page, "agent-saved-replies-390")
    assert [r.name for r in SavedReply.objects.all()] == ["Refund"]
