"""Writing to a contact and setting Email preferences in a real browser (Chromium,
the strict CSP), against the live server, Dovecot and aiosmtpd."""

from __future__ import annotations

import email as email_lib
from email import policy

import pytest
from playwright.sync_api import expect

from crm.models import Email, Preferences
from inboxes.outbox import outbox_send_run
from tests.crm.send_support import dana
from tests.support.factories import PASSWORD
from tests.support.mail import connect_imap_mailbox

pytest_plugins = ["tests.support.browser"]
pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_rep_writes_to_a_contact_and_it_arrives_with_the_font_and_tracking(
    pages, member, dovecot, smtp_server, mail_user
):
    mailbox = connect_imap_mailbox(
        actor=member,
        dovecot=dovecot,
        smtp_server=smtp_server,
        user=mail_user,
        address="bo.personal@acme.example.com",
        kind="personal",
    )
    smtp_server.clear()
    Preferences.objects.create(user=member, font_family="Verdana", font_size=15)
    contact = dana(member.account)
    page = pages.log_in(member.email, PASSWORD)

    page.goto(f"/contacts/{contact.pk}/email/")
    expect(page.get_by_role("heading", name="Write to Dana Prospect")).to_be_visible()
    expect(page.get_by_label("From")).to_have_value(str(mailbox.pk))
    expect(page.get_by_label("Track opens")).to_be_checked()
    page.set_viewport_size({"width": 1440, "height": 900})
    pages.screenshot(page, "compose-1440")
    page.set_viewport_size({"width": 390, "height": 844})
    pages.screenshot(page, "compose-390")

    # A send without a subject says what to do, and keeps what was written.
    page.get_by_label("Message").fill("Hi Dana,\n\nThe offer: https://acme.example.com/offer")
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_text("Write a subject")).to_be_visible()
    expect(page.get_by_label("Message")).to_have_value(
        "Hi Dana,\n\nThe offer: https://acme.example.com/offer"
    )
    pages.problems.expect_console_error("400")
    pages.screenshot(page, "compose-error")

    page.get_by_label("Subject").fill("The offer")
    page.get_by_label("Track clicks").uncheck()
    page.get_by_role("button", name="Send").click()
    page.wait_for_url(f"**/contacts/{contact.pk}/")
    expect(page.get_by_text("The offer").first).to_be_visible()

    email = Email.objects.get(contact=contact)
    assert (email.track_opens, email.track_clicks, email.logged) == (True, False, True)
    assert outbox_send_run(mailbox.pk).sent == 1
    [received] = smtp_server.messages
    mime = email_lib.message_from_bytes(received.data, policy=policy.default)
    html = mime.get_body(("html",)).get_content()
    assert "font-family: Verdana, Geneva, sans-serif; font-size: 15px" in html
    assert "/t/o/" in html and "/t/c/" not in html
    assert mime.get_body(("plain",)).get_content().startswith("Hi Dana,")


def test_the_font_preview_follows_the_choice_and_the_preferences_are_saved(pages, member):
    page = pages.log_in(member.email, PASSWORD)
    page.get_by_role("link", name="Email preferences").click()
    expect(page.get_by_role("heading", name="Email preferences", level=1)).to_be_visible()
    preview = page.locator("#font-preview")
    expect(preview).to_have_css("font-size", "14px")

    page.get_by_label("Font", exact=True).select_option("Georgia")
    page.get_by_label("Size (px)").fill("20")
    expect(preview).to_have_css("font-size", "20px")
    assert "Georgia" in preview.evaluate("node => getComputedStyle(node).fontFamily")
    page.get_by_label("Never log").fill("ceo@bigcorp.example.com\n@competitor.example")
    page.get_by_label("Track clicks").uncheck()
    page.set_viewport_size({"width": 1440, "height": 900})
    pages.screenshot(page, "preferences-1440")
    page.set_viewport_size({"width": 390, "height": 844})
    pages.screenshot(page, "preferences-390")
    page.get_by_role("button", name="Save preferences").click()

    expect(page.get_by_text("Your email preferences are saved.")).to_be_visible()
    preferences = Preferences.objects.get(user=member)
    assert (preferences.font_family, preferences.font_size) == ("Georgia", 20)
    assert preferences.never_log == ["ceo@bigcorp.example.com", "@competitor.example"]
    assert (preferences.track_opens, preferences.track_clicks) == (True, False)
    # Reloaded: the saved font, from the stylesheet, before any script runs.
    expect(preview).to_have_css("font-size", "20px")


def test_a_bad_never_log_line_is_named_in_the_browser(pages, member):
    page = pages.log_in(member.email, PASSWORD)
    page.goto("/settings/preferences/")
    page.get_by_label("Never log").fill("fine@x.example\nnot-an-address")
    pages.problems.expect_console_error("400")
    page.get_by_role("button", name="Save preferences").click()
    expect(page.get_by_role("alert")).to_contain_text("'not-an-address' is not an email address")
    pages.screenshot(page, "preferences-error")
    assert Preferences.objects.get(user=member).never_log == []
