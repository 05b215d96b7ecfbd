"""The CRM as a rep uses it, in a real browser (Chromium, the strict CSP): from the
contact page, write an email from a personal mailbox; it goes out through the outbox to
aiosmtpd; the contact's reply arrives in the rep's Dovecot mailbox, the sync logs it,
and it is on the contact's timeline, threaded to the email it answers."""

from __future__ import annotations

import email as email_lib
from email import policy

import pytest
from playwright.sync_api import expect

from crm.models import Email
from inboxes.outbox import outbox_send_run
from inboxes.sync import mailbox_sync
from tests.support.crm_mail import REP, connect_rep, contact
from tests.support.factories import PASSWORD
from tests.support.mail import make_email

pytest_plugins = ["tests.support.browser"]
pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CAROL = "carol@customer.example.com"


def test_a_rep_writes_from_the_contact_page_and_sees_the_reply_land(
    pages, member, account, dovecot, smtp_server, mail_user
):
    rep = connect_rep(member, dovecot, smtp_server, mail_user)
    mailbox_sync(rep.mailbox.pk)  # the first import
    carol = contact(account, CAROL, owner=member)
    carol.name = "Carol Customer"
    carol.save()
    smtp_server.clear()
    page = pages.log_in(member.email, PASSWORD)

    page.goto(f"/contacts/{carol.pk}/")
    expect(page.locator("#empty-timeline")).to_be_visible()
    page.get_by_role("link", name="Write email").click()
    expect(page.get_by_label("From")).to_have_value(str(rep.mailbox.pk))
    page.get_by_label("Subject").fill("Your trial")
    page.get_by_label("Message").fill("Hi Carol,\n\nHow is the trial going?")
    page.get_by_role("button", name="Send").click()

    # Back on the contact page: the email is there at once, queued.
    page.wait_for_url(f"**/contacts/{carol.pk}/")
    sent_event = page.locator("#timeline .event-email").first
    expect(sent_event).to_contain_text("Your trial")
    expect(sent_event).to_contain_text("Queued")

    # The send run delivers it; the page shows it delivered.
    assert outbox_send_run(rep.mailbox.pk).sent == 1
    [received] = smtp_server.messages
    mime = email_lib.message_from_bytes(received.data, policy=policy.default)
    assert received.rcpt_tos == (CAROL,)
    page.reload()
    expect(page.locator("#timeline .event-email").first).to_contain_text("Delivered to the server")

    # Carol answers from her mail client into Bo's mailbox; the sync logs it.
    reply = make_email(
        sender=f"Carol Customer <{CAROL}>",
        to=REP,
        subject="Re: Your trial",
        body="Going well, thanks! Can we talk on Monday?",
        in_reply_to=mime["Message-ID"],
        references=mime["Message-ID"],
    )
    dovecot.deliver(mail_user[0], reply)
    mailbox_sync(rep.mailbox.pk)
    logged = Email.objects.get(contact=carol, direction="inbound")
    assert logged.replied_to == Email.objects.get(contact=carol, direction="outbound")

    page.reload()
    # (the reply's Date has whole seconds: it may sort beside the email it answers)
    newest = page.locator("#timeline .event-email").filter(has_text="Re: Your trial")
    expect(newest).to_contain_text("Received")
    expect(newest).to_contain_text("Re: Your trial")
    expect(newest).to_contain_text("Can we talk on Monday?")
    pages.screenshot(page, "crm-flow-contact")

    # Show original gives the bytes as received.
    with page.expect_popup() as popup:
        newest.get_by_role("link", name="Show original").click()
    original = popup.value
    expect(original.locator("body")).to_contain_text("Can we talk on Monday?")
