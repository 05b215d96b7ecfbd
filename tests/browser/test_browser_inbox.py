"""The inbox screen in a real browser: Chromium, htmx, the strict CSP and the
sandboxed email frames, against the live server, Dovecot, aiosmtpd and a real
Celery worker on a private Redis (tests/support/workers.py).

Mail arrives the real way: the test delivers it to Dovecot and asks the worker
to sync (what the IDLE watcher or beat would do); replies leave through the
worker to aiosmtpd. The ``pages`` fixture fails a test on any console error,
uncaught JavaScript error, CSP violation or request that leaves 127.0.0.1.
"""

from __future__ import annotations

import email
import re
import time
from email import policy

import pytest
from django.conf import settings
from django.test import Client
from playwright.sync_api import Page, expect

from accounts.models import User
from conversations.models import Conversation, ConversationEvent
from conversations.services import routing_rule_set
from inboxes.models import Attachment, Message, OutboxItem
from inboxes.tasks import sync_mailbox
from tests.support.conversations_factory import make_conversation
from tests.support.mail import connect_imap_mailbox, make_email, team_inbox

pytest.register_assert_rewrite("tests.support.workers")
from tests.support.workers import wait_until  # noqa: E402

pytest_plugins = ["tests.support.browser", "tests.support.workers"]
pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SUPPORT = "support@acme.example.com"
SYNC_TASK = "inboxes.tasks.sync_mailbox"
# New mail must show within 5 s of being stored: the list polls every 3 s.
LIVE_MS = 5_000


def header(raw: bytes, name: str) -> str:
    return str(email.message_from_bytes(raw, policy=policy.default)[name] or "")


def synced(worker, mailbox, before: int) -> None:
    """Ask the worker to sync, as the IDLE watcher would, and wait until it has."""
    sync_mailbox.delay(str(mailbox.pk))
    done = rf"Task {SYNC_TASK}\[[^\]]+\] succeeded"
    wait_until(lambda: worker.count(done) >= before + 1, 15, "the worker's sync")


def htmx_settled(page: Page) -> None:
    """Until htmx has no request in flight and nothing swapping or settling: what it
    swaps in gets its listeners when it settles (20 ms later), and a select changed
    before that sends nothing."""
    expect(page.locator(".htmx-request, .htmx-swapping, .htmx-settling")).to_have_count(0)


def rows(page: Page):
    return page.locator("#conv-list .row")


def open_inbox(pages, user, query: str = "") -> Page:
    """A new browser context logged in as ``user`` (a session made by the test
    client; tests/browser/test_browser.py covers the login form), on /inbox/."""
    client = Client()
    client.force_login(user)
    page = pages.new()
    name = settings.SESSION_COOKIE_NAME
    page.context.add_cookies(
        [{"name": name, "value": client.cookies[name].value, "url": pages.base_url}]
    )
    page.goto("/inbox/" + query)
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="Inbox", exact=True)).to_have_class("active")
    return page


def test_customer_mail_is_routed_answered_closed_and_reopened_without_a_reload(
    pages, private_engine, admin, member, other_member, password, dovecot, smtp_server, mail_user
):
    # A Redis of its own: test runs elsewhere on this machine share the default one.
    worker = private_engine.worker()
    inbox = team_inbox(admin.account, from_name="Acme Support")
    mailbox = connect_imap_mailbox(
        actor=admin,
        dovecot=dovecot,
        smtp_server=smtp_server,
        user=mail_user,
        address=SUPPORT,
        inbox=inbox,
    )
    done = rf"Task {SYNC_TASK}\[[^\]]+\] succeeded"
    wait_until(lambda: worker.count(done) >= 1, 20, "the first sync (started by connecting)")
    smtp_server.clear()

    # Given Ann watches Unassigned, and Bo his own conversations
    ann = open_inbox(pages, admin)
    bo = open_inbox(pages, member, "?view=mine")
    expect(ann.locator(".list-title")).to_have_text("Unassigned")
    expect(rows(ann)).to_have_count(0)
    expect(rows(bo)).to_have_count(0)

    # When a customer writes (no routing yet), it shows up in Unassigned, unread, without a reload
    first = make_email(subject="Printer on fire", body="It smells of smoke.\n")
    dovecot.deliver(mail_user[0], first)
    synced(worker, mailbox, 1)
    expect(rows(ann)).to_have_count(1, timeout=LIVE_MS)
    expect(rows(ann).first).to_contain_text("Printer on fire")
    expect(rows(ann).first).to_have_class(re.compile(r"\bunread\b"))
    expect(ann.locator('#inbox-nav [data-view="unassigned"] .count')).to_have_text("1")

    # Given round-robin among Ann, Bo and Cy, and Ann sets herself away on the page
    routing_rule_set(
        actor=admin, inbox=inbox, mode="round_robin", users=[admin, member, other_member]
    )
    ann.get_by_label("Available for new conversations").uncheck()
    expect(ann.locator("#availability")).to_contain_text("You are away")
    wait_until(
        lambda: not User.objects.get(pk=admin.pk).is_available, 5, "Ann's availability saved"
    )

    # When the next customer writes, routing gives it to Bo (Ann is away): it appears in his list
    second = make_email(subject="Refund please", body="I was charged twice.\n")
    second_id = header(second, "Message-ID")
    dovecot.deliver(mail_user[0], second)
    synced(worker, mailbox, 2)
    conversation = Conversation.objects.get(subject="Refund please")
    assert conversation.assignee == member
    expect(rows(bo)).to_have_count(1, timeout=LIVE_MS)
    expect(rows(bo).first).to_contain_text("Refund please")
    expect(rows(bo).first).to_contain_text("Bo Lee")
    expect(rows(ann)).to_have_count(1)  # Unassigned still holds only the first one

    # When Bo opens it from the keyboard: j selects, Enter opens
    bo.locator("body").press("j")
    expect(rows(bo).first).to_have_class(re.compile(r"\bselected\b"))
    bo.keyboard.press("Enter")
    pane = bo.locator("#conversation-pane")
    expect(pane.locator("#conv-header h2")).to_have_text("Refund please")
    expect(bo).to_have_url(f"{pages.base_url}/inbox/c/{conversation.pk}/?view=mine")
    thread = pane.locator("#thread")
    expect(thread).to_contain_text("I was charged twice.")
    expect(thread.locator(".item.event")).to_contain_text(
        "Assigned to Bo Lee by routing · Round-robin: Bo Lee's turn (Ann Smith away)"
    )
    expect(rows(bo).first).to_have_class(re.compile(r"\bcurrent\b"))
    expect(rows(bo).first).not_to_have_class(re.compile(r"\bunread\b"), timeout=LIVE_MS)

    # When he replies (r focuses the reply box); polls are held back to see the reply's own answer
    held = []
    bo.route("**/thread/**", lambda route: held.append(route))
    bo.locator("body").press("r")
    expect(bo.get_by_role("textbox", name="Reply")).to_be_focused()
    bo.keyboard.type("Sorry about that, the refund is on its way.")
    # The SMTP server holds its MAIL FROM answer until the page has shown the waiting
    # state: a worker that is quick would otherwise finish before the page looks.
    smtp_server.hold_mail_reply(seconds=30)
    bo.get_by_role("button", name="Send reply").click()

    # Then the reply is in the thread at once, waiting for the worker, and the box is empty again
    reply = pane.locator(".item.message.outbound")
    expect(reply).to_contain_text("the refund is on its way")
    # (the worker may have claimed it already, but the server has not answered yet)
    expect(reply.locator(".delivery")).to_have_text(re.compile(r"^(Queued|Sending)$"))
    smtp_server.wait_for_hold()
    smtp_server.release_holds()
    expect(bo.get_by_role("textbox", name="Reply")).to_have_text("")
    bo.unroute("**/thread/**")
    for route in held:
        route.abort()

    # And the worker sends it from the team address, threaded; the thread shows Sent by itself
    [sent] = smtp_server.wait_for_messages(1, timeout=10)
    assert header(sent.data, "From") == f"Acme Support <{SUPPORT}>"
    assert header(sent.data, "To") == "carol@customer.example.com"
    assert header(sent.data, "In-Reply-To") == second_id
    assert header(sent.data, "Subject") == "Re: Refund please"
    expect(reply.locator(".delivery")).to_have_text("Sent", timeout=LIVE_MS + 5_000)
    reply_message = OutboxItem.objects.get().message

    # When Bo closes it with e, he moves on: nothing else is his, so back to his list
    bo.locator("body").press("e")
    expect(bo).to_have_url(f"{pages.base_url}/inbox/?view=mine")
    expect(rows(bo)).to_have_count(0, timeout=LIVE_MS)  # Mine lists open conversations
    expect(bo.locator("#conversation-pane.empty")).to_be_attached()
    assert ConversationEvent.objects.filter(
        conversation=conversation, kind="closed", actor=member
    ).exists()
    pages.screenshot(bo, "inbox-closed")

    # When the customer answers the reply, it reopens and comes back without a reload
    answer = make_email(
        subject="Re: Refund please",
        body="Thanks, received!\n",
        in_reply_to=reply_message.message_id,
        references=f"{second_id} {reply_message.message_id}",
    )
    dovecot.deliver(mail_user[0], answer)
    started = time.monotonic()
    synced(worker, mailbox, 3)
    conversation.refresh_from_db()
    assert conversation.status == "open" and conversation.message_count == 3
    expect(rows(bo)).to_have_count(1, timeout=LIVE_MS)
    rows(bo).first.click()
    expect(pane.locator("#conv-header .badge")).to_have_text("Open", timeout=LIVE_MS)
    expect(thread).to_contain_text("Thanks, received!")
    expect(thread.locator(".item.event").last).to_contain_text("Reopened by the customer's reply")
    assert time.monotonic() - started < 15
    pages.screenshot(bo, "inbox")
    pages.screenshot(ann, "inbox-unassigned")
    # Every task has finished (synced, sent): end the worker (by its PIDs) now
    # rather than wait seconds for Celery's warm shutdown; its Redis goes too.
    worker.kill()


def test_hostile_email_runs_nothing_and_its_own_images_and_styles_show(
    pages, live_server, member, password, account
):
    inbox = team_inbox(account)
    # Stored as-is, as if ingestion had let it through: the page must hold it anyway.
    conversation = make_conversation(
        inbox,
        subject="Your invoice",
        text="Hi",
        html=(
            "<p>Hi</p>"
            "<script>window.top.__pwned = true; alert('script')</script>"
            "<img src=x onerror=\"window.top.__pwned = true; alert('img')\">"
            "<a id=js href=\"javascript:window.top.__pwned = true; alert('link')\">click me</a>"
            '<p style="color: rgb(200, 0, 0); font-weight: 700">Styled by the sender</p>'
            '<p><img src="cid:logo@acme" alt="logo" width="32" height="32"></p>'
            f'<p><img src="{remote_image(live_server)}" alt="remote"></p>'
        ),
    )
    Message.objects.filter(conversationmessage__conversation=conversation).update(
        has_remote_images=True
    )
    png = Attachment.objects.create(
        message=conversation.messages.get(),
        filename="logo.png",
        content_type="image/png",
        content_id="logo@acme",
        inline=True,
        size=len(PNG),
    )
    png.file.save("logo.png", _content(PNG))

    page = open_inbox(pages, member)
    # Playwright's init scripts (the CSP reporter, the flag below) are refused in the
    # sandboxed frame, and Chromium says so: that is the sandbox at work.
    pages.problems.expect_console_error(r"^Blocked script execution in 'about:srcdoc'")
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.add_init_script("window.__pwned = false")
    page.goto(f"/inbox/c/{conversation.pk}/?view=open")

    frame_element = page.locator("iframe.email-frame")
    expect(frame_element).to_have_count(1)
    sandbox = frame_element.get_attribute("sandbox").split()
    assert "allow-scripts" not in sandbox and "allow-same-origin" not in sandbox
    frame = page.frame_locator("iframe.email-frame")
    expect(frame.locator("p").first).to_have_text("Hi")
    expect(frame.get_by_text("Styled by the sender")).to_have_css("color", "rgb(200, 0, 0)")
    expect(frame.get_by_role("img", name="logo")).to_have_js_property("naturalWidth", 1)
    assert frame.locator("script").count() == 0
    frame.get_by_text("click me").click()
    page.wait_for_timeout(300)
    assert page.evaluate("window.__pwned") is False
    assert dialogs == []

    # Remote images: hidden until Bo asks for them; no src at all, so no request
    # can tell the sender the mail was read
    remote = frame.get_by_role("img", name="remote")
    expect(remote).not_to_have_attribute("src", re.compile("."))
    expect(remote).to_have_js_property("naturalWidth", 0)
    pages.screenshot(page, "inbox-email-blocked")
    page.get_by_role("link", name="Show images").click()
    expect(page).to_have_url(f"{pages.base_url}/inbox/c/{conversation.pk}/?view=open&images=1")
    frame = page.frame_locator("iframe.email-frame")
    expect(frame.get_by_role("img", name="remote")).to_have_js_property("naturalWidth", 32)
    expect(frame.get_by_role("img", name="remote")).to_have_attribute(
        "src", remote_image(live_server)
    )
    assert page.evaluate("window.__pwned") is False
    assert dialogs == []
    pages.screenshot(page, "inbox-email")


PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cfc0f01f0005000201a5f4a0f70000000049454e44ae426082"
)


def _content(data: bytes):
    from django.core.files.base import ContentFile

    return ContentFile(data)


def remote_image(live_server) -> str:
    """An image on another origin (127.0.0.1 for a page on localhost, and the other way
    round) that the test controls: http: but not 'self'."""
    scheme, host, port = live_server.url.split(":")
    other = "127.0.0.1" if host == "//localhost" else "localhost"
    return f"http://{other}:{port}/static/drf_spectacular_sidecar/swagger-ui-dist/favicon-32x32.png"


def test_keyboard_help_search_notes_and_assignment(pages, member, other_member, password, account):
    inbox = team_inbox(account)
    printer = make_conversation(inbox, subject="Printer on fire", text="Smoke everywhere")
    make_conversation(inbox, subject="Password reset", text="I forgot it")
    page = open_inbox(pages, member, "?view=open")
    expect(rows(page)).to_have_count(2)

    # The views swap the list in place; Back comes back to where Bo was
    page.get_by_role("navigation", name="Inbox views").get_by_role("link", name="Closed").click()
    expect(page.locator(".list-title")).to_have_text("Closed")
    expect(page).to_have_url(f"{pages.base_url}/inbox/?view=closed")
    expect(rows(page)).to_have_count(0)
    page.go_back()
    expect(page.locator(".list-title")).to_have_text("All open")
    expect(rows(page)).to_have_count(2)

    # ? shows the shortcuts, Escape closes them
    page.locator("body").press("?")
    expect(page.get_by_role("dialog", name="Keyboard shortcuts")).to_be_visible()
    pages.screenshot(page, "inbox-shortcuts")
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog", name="Keyboard shortcuts")).to_be_hidden()

    # / focuses the search; typing filters the list in place and the address follows
    page.locator("body").press("/")
    expect(page.locator("#q")).to_be_focused()
    page.keyboard.type("smoke")
    expect(rows(page)).to_have_count(1)
    expect(rows(page).first).to_contain_text("Printer on fire")
    expect(page).to_have_url(f"{pages.base_url}/inbox/?view=open&q=smoke")

    # Clicking opens it; a note with a mention, then assignment from the select
    rows(page).first.click()
    expect(page.locator("#conv-header h2")).to_have_text("Printer on fire")
    page.locator("body").press("n")
    expect(page.locator("#note-text")).to_be_focused()
    page.keyboard.type("@cy can you look at this?")
    page.keyboard.press("Control+Enter")
    note = page.locator(".item.note")
    expect(note.locator("mark.mention")).to_have_text("@cy")
    expect(page.locator("#note-text")).to_have_value("")
    htmx_settled(page)  # the header the note's answer swapped in listens only then
    page.get_by_label("Assignee").select_option(label="Cy Young")
    expect(page.locator(".item.event").last).to_contain_text("Bo Lee assigned this to Cy Young")
    page.get_by_role("button", name="Assign to me").click()
    expect(page.locator(".item.event").last).to_contain_text("Bo Lee took this conversation")
    expect(page.get_by_label("Assignee")).to_have_value(str(member.pk))
    # A refused note says why in words, next to the form, and keeps what was typed
    page.locator("body").press("n")
    page.keyboard.type("   ")
    page.get_by_role("button", name="Add note").click()
    expect(page.locator("#note-error")).to_have_text("The note is empty.")
    expect(page.locator("#note-text")).to_have_value("   ")
    # Without a team email there is no reply box, and the page says so
    page.locator("body").press("Escape")
    page.locator("#mode-reply + label").click()
    expect(page.locator("#reply-form")).to_contain_text("no connected team email")
    printer.refresh_from_db()
    assert printer.assignee == member
    assert ConversationEvent.objects.filter(conversation=printer).count() == 2
    pages.screenshot(page, "inbox-note")


def test_show_more_appends_pages_that_the_poll_keeps(pages, member, account, monkeypatch):
    from conversations import inbox_views
    from conversations.threading import thread_into_inbox
    from tests.support.conversations_factory import make_message

    monkeypatch.setattr(inbox_views, "PAGE_SIZE", 3)  # the live server runs in this process
    inbox = team_inbox(account)
    made = [make_conversation(inbox, subject=f"Case {n}") for n in range(8)]
    page = open_inbox(pages, member, "?view=open")
    expect(rows(page)).to_have_count(3)

    # "Show more" appends the next page only; the address stays the list's
    page.get_by_role("link", name="Show more").click()
    expect(rows(page)).to_have_count(6)
    page.get_by_role("link", name="Show more").click()
    expect(rows(page)).to_have_count(8)
    expect(page.get_by_role("link", name="Show more")).to_have_count(0)
    expect(rows(page).last).to_contain_text("Case 0")
    expect(page).to_have_url(f"{pages.base_url}/inbox/?view=open")
    # j walks on into the appended rows
    for _ in range(5):
        page.locator("body").press("j")
    expect(rows(page).nth(4)).to_have_class(re.compile(r"\bselected\b"))

    # New mail: the poll refreshes the first page and keeps what was appended
    make_conversation(inbox, subject="Brand new")
    expect(rows(page).first).to_contain_text("Brand new", timeout=LIVE_MS)
    expect(rows(page)).to_have_count(9)

    # An answer to the oldest conversation moves it to the top, shown once
    first = made[0].messages.get()
    answer = make_message(
        inbox, subject="Re: Case 0", in_reply_to=first.message_id, references=[first.message_id]
    )
    thread_into_inbox(inbox, [answer], backfill=False)
    expect(rows(page).first).to_contain_text("Case 0", timeout=LIVE_MS)
    expect(page.locator(f'#conv-list .row[data-id="{made[0].pk}"]')).to_have_count(1)
    expect(rows(page)).to_have_count(9)
    pages.screenshot(page, "inbox-show-more")
