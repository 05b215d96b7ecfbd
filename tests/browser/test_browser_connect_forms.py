"""The personal connect form in a real browser (Chromium, the strict CSP) on a wide
screen and a phone: sign-in buttons first, the servers filled in from the address."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from inboxes.models import Mailbox

pytest_plugins = ["tests.support.browser"]  # the browser and pages fixtures
pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.mark.parametrize(
    "viewport",
    [{"width": 1440, "height": 900}, {"width": 390, "height": 844}],
    ids=["wide", "phone"],
)
def test_typing_an_address_fills_in_the_servers_below_the_sign_in_buttons(
    pages, member, password, settings, viewport
):
    # Given Gmail is set up on this server and Microsoft 365 is not
    settings.GOOGLE_CLIENT_ID = "google-client-id"
    settings.GOOGLE_CLIENT_SECRET = "google-client-secret"
    settings.MICROSOFT_CLIENT_ID = ""
    settings.MICROSOFT_CLIENT_SECRET = ""
    page = pages.log_in(member.email, password)
    page.set_viewport_size(viewport)
    page.goto("/settings/email/")

    # Then the sign-in buttons come first: Gmail ready, Microsoft 365 disabled with a way out
    gmail = page.get_by_role("button", name="Connect Gmail")
    microsoft = page.get_by_role("button", name="Connect Microsoft 365")
    expect(gmail).to_be_enabled()
    expect(microsoft).to_be_disabled()
    expect(page.locator("#connect-microsoft-unavailable")).to_have_text(
        "Not available on this server: ask your admin."
    )
    form = page.locator("#connect-personal")
    address = form.get_by_label("Email address")
    assert gmail.bounding_box()["y"] < address.bounding_box()["y"]
    assert microsoft.bounding_box()["y"] < address.bounding_box()["y"]

    # When Bo has typed his own SMTP user name and then types his iCloud address
    smtp = form.get_by_role("group", name="Outgoing mail (SMTP)")
    smtp.get_by_label("User name").fill("bo.lee@icloud.com")
    address.fill("bo@icloud.com")
    address.press("Tab")

    # Then the servers are filled in, and what he typed himself is left alone
    imap = form.get_by_role("group", name="Incoming mail (IMAP)")
    expect(imap.get_by_label("Server")).to_have_value("imap.mail.me.com")
    expect(imap.get_by_label("Port")).to_have_value("993")
    expect(imap.get_by_label("Security")).to_have_value("ssl")
    expect(imap.get_by_label("User name")).to_have_value("bo")
    expect(smtp.get_by_label("Server")).to_have_value("smtp.mail.me.com")
    expect(smtp.get_by_label("Port")).to_have_value("587")
    expect(smtp.get_by_label("Security")).to_have_value("starttls")
    expect(smtp.get_by_label("User name")).to_have_value("bo.lee@icloud.com")
    expect(form.locator(".prefill-note")).to_contain_text(
        "Filled in the server settings for iCloud Mail."
    )

    # When he changes to an address of a provider nobody knows
    address.fill("bo@acme.example.com")
    address.press("Tab")

    # Then the form says what to do, and keeps what was there
    expect(form.locator(".prefill-note")).to_contain_text(
        "No server settings are known for acme.example.com"
    )
    expect(imap.get_by_label("Server")).to_have_value("imap.mail.me.com")

    # And the "Fill in server settings" button asks again without leaving the page
    address.fill("bo@fastmail.com")
    form.get_by_role("button", name="Fill in server settings").click()
    expect(imap.get_by_label("Server")).to_have_value("imap.fastmail.com")
    expect(smtp.get_by_label("Port")).to_have_value("465")
    expect(form.get_by_label("Email address")).to_have_value("bo@fastmail.com")

    # And the page fits the screen, without sideways scrolling
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= viewport["width"], f"the page is {width} px wide"
    pages.screenshot(page, f"connect-prefill-{viewport['width']}")
    assert not Mailbox.objects.exists()
