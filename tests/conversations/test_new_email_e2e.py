"""New email end to end: the email leaves through a real Celery worker (on a private
Redis) to aiosmtpd, the prospect's answer is delivered to Dovecot and synced, and
joins the conversation New email opened. In Chromium, at 1440 and 390 px: the New
email page, the conversation it opens, and Make contact.

Screenshots land in /tmp/postkamer-*.png with POSTKAMER_SCREENSHOTS=1."""

from __future__ import annotations

import email
from email import policy

import pytest
from django.conf import settings
from django.test import Client
from playwright.sync_api import Page, expect

from conversations.models import Conversation, ConversationMessage
from conversations.outbound import conversation_start
from crm.contacts import contact_create
from crm.models import Contact, TimelineEvent
from inboxes.models import OutboxItem
from inboxes.tasks import sync_mailbox
from tests.support.mail import connect_imap_mailbox, make_email, team_inbox

pytest.register_assert_rewrite("tests.support.workers")
from tests.support.workers import wait_until  # noqa: E402

pytest_plugins = ["tests.support.browser", "tests.support.workers"]
pytestmark = pytest.mark.django_db(transaction=True)

SALES = "sales@acme.example.com"
PROSPECT = "pat@prospect.example.com"
SYNC_TASK = "inboxes.tasks.sync_mailbox"


def header(raw: bytes, name: str) -> str:
    return str(email.message_from_bytes(raw, policy=policy.default)[name] or "")


@pytest.fixture
def sales(admin, dovecot, smtp_server, mail_user):
    inbox = team_inbox(admin.account, name="Sales", from_name="Acme Sales")
    inbox.signature = "Acme Sales team"
    inbox.save()
    mailbox = connect_imap_mailbox(
        actor=admin,
        dovecot=dovecot,
        smtp_server=smtp_server,
        user=mail_user,
        address=SALES,
        inbox=inbox,
    )
    return inbox, mailbox


def synced(worker, mailbox, before: int) -> None:
    """Ask the worker to sync, as the IDLE watcher would, and wait until it has."""
    sync_mailbox.delay(str(mailbox.pk))
    done = rf"Task {SYNC_TASK}\[[^\]]+\] succeeded"
    wait_until(lambda: worker.count(done) >= before + 1, 20, "the worker's sync")


def answer_from_prospect(dovecot, mail_user, sent_raw: bytes, text: str = "Sounds good!\n"):
    sent_id = header(sent_raw, "Message-ID")
    answer = make_email(
        sender=f"Pat Prospect <{PROSPECT}>",
        to=SALES,
        subject=f"Re: {header(sent_raw, 'Subject')}",
        body=text,
        in_reply_to=sent_id,
        references=sent_id,
    )
    dovecot.deliver(mail_user[0], answer)
    return header(answer, "Message-ID")


def test_new_email_leaves_once_and_the_answer_threads_into_its_conversation(
    private_engine, admin, member, sales, dovecot, smtp_server, mail_user
):
    inbox, mailbox = sales
    worker = private_engine.worker()
    synced(worker, mailbox, worker.count(rf"Task {SYNC_TASK}\[[^\]]+\] succeeded"))
    smtp_server.clear()
    contact = contact_create(account=admin.account, email=PROSPECT, name="Pat Prospect")

    conversation = conversation_start(
        actor=member,
        inbox=inbox,
        to=[PROSPECT],
        subject="Your trial of Acme",
        text="Hi Pat, how is the trial going?",
    )
    [received] = smtp_server.wait_for_messages(1, timeout=15)
    assert header(received.data, "From") == f"Acme Sales <{SALES}>"
    assert header(received.data, "To") == f"Pat Prospect <{PROSPECT}>"
    assert header(received.data, "Subject") == "Your trial of Acme"
    assert received.rcpt_tos == (PROSPECT,)
    sent = conversation.messages.get()
    assert header(received.data, "Message-ID") == sent.message_id
    item = wait_until(
        lambda: OutboxItem.objects.filter(message=sent, state="sent").first(), 15, "sent mark"
    )
    assert item.attempts == 1

    succeeded = worker.count(rf"Task {SYNC_TASK}\[[^\]]+\] succeeded")
    answer_id = answer_from_prospect(dovecot, mail_user, received.data)
    synced(worker, mailbox, succeeded)
    wait_until(
        lambda: ConversationMessage.objects.filter(message__message_id=answer_id).exists(),
        10,
        "the prospect's answer",
    )
    assert Conversation.objects.filter(inbox=inbox).count() == 1
    conversation.refresh_from_db()
    assert conversation.message_count == 2
    assert conversation.assignee == member
    assert conversation.contact == contact
    # Date headers have whole seconds: within one, the order they were written in.
    events = TimelineEvent.objects.filter(contact=contact).order_by("at", "created_at")
    directions = [e.detail["direction"] for e in events]
    assert directions == ["outbound", "inbound"]
    assert len(smtp_server.messages) == 1


# --- In Chromium ------------------------------------------------------------------------------


def logged_in(pages, user, width: int) -> Page:
    client = Client()
    client.force_login(user)
    page = pages.new()
    page.set_viewport_size({"width": width, "height": 900})
    name = settings.SESSION_COOKIE_NAME
    page.context.add_cookies(
        [{"name": name, "value": client.cookies[name].value, "url": pages.base_url}]
    )
    return page


def no_horizontal_scroll(page: Page) -> None:
    """Once the layout has settled (a scrollbar appearing mid-layout can make it wider
    for a frame): the page never scrolls sideways."""
    overflow = 0
    for _ in range(20):
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        if overflow <= 0:
            break
        page.wait_for_timeout(100)
    assert overflow <= 0, f"the page scrolls sideways by {overflow}px"


@pytest.mark.browser
@pytest.mark.parametrize("width", [1440, 390])
def test_new_email_from_the_inbox_in_a_browser_and_make_contact(
    pages, private_engine, member, sales, dovecot, smtp_server, mail_user, width
):
    inbox, mailbox = sales
    worker = private_engine.worker()
    smtp_server.clear()
    page = logged_in(pages, member, width)
    page.goto(f"/inbox/?inbox={inbox.pk}")
    page.get_by_role("link", name="New email").click()
    expect(page.get_by_role("heading", name="New email")).to_be_visible()
    expect(page.get_by_label("From")).to_have_value(str(inbox.pk))
    pages.screenshot(page, f"new-email-{width}")
    no_horizontal_scroll(page)

    # A mistake first: said on its field, and what was typed stays.
    page.get_by_label("To").fill("pat@")
    page.get_by_label("Subject").fill("Your trial of Acme")
    page.get_by_label("Message").fill("Hi Pat,\n\nhow is the trial going?")
    page.get_by_role("button", name="Send email").click()
    expect(page.locator("#new-email-form .errorlist").first).to_contain_text(
        "is not a valid email address"
    )
    expect(page.get_by_label("Message")).to_have_value("Hi Pat,\n\nhow is the trial going?")
    pages.screenshot(page, f"new-email-error-{width}")
    no_horizontal_scroll(page)

    page.get_by_label("To").fill("Pat@Prospect.example.com, ceo@prospect.example.com")
    page.get_by_label("Cc").fill("cto@prospect.example.com")
    page.get_by_role("button", name="Send email").click()
    expect(page.get_by_text("Email queued")).to_be_visible()
    conversation = Conversation.objects.get(inbox=inbox)
    assert page.url.endswith(f"/inbox/c/{conversation.pk}/?view=mine")
    [received] = smtp_server.wait_for_messages(1, timeout=15)
    assert received.rcpt_tos == (
        "Pat@Prospect.example.com",
        "ceo@prospect.example.com",
        "cto@prospect.example.com",
    )
    expect(page.locator("#thread")).to_contain_text("how is the trial going?")

    # The answer arrives and shows in the open conversation (the thread polls).
    answer_from_prospect(dovecot, mail_user, received.data, text="Going well, thanks!\n")
    synced(worker, mailbox, 0)
    expect(page.locator("#thread .message")).to_have_count(2, timeout=10_000)
    expect(page.locator("#conv-header")).to_contain_text("Pat Prospect is not a contact yet.")
    pages.screenshot(page, f"new-email-conversation-{width}")
    no_horizontal_scroll(page)

    page.get_by_role("button", name="Make contact").click()
    contact_link = page.locator("#contact-link")
    expect(contact_link).to_have_text("Pat Prospect")
    contact = Contact.objects.get()
    assert contact_link.get_attribute("href") == f"/contacts/{contact.pk}/"
    assert contact.canonical_email == PROSPECT
    assert TimelineEvent.objects.filter(contact=contact).count() == 2
    pages.screenshot(page, f"new-email-contact-{width}")
