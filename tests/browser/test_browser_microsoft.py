"""Connecting Microsoft 365 in a real browser: Settings > Email, Microsoft's consent page
(the fake, over TLS), and back to Postkamer.

The ``pages`` fixture (tests/support/browser.py) fails a test on any console error,
uncaught JavaScript error, CSP violation or request that leaves 127.0.0.1.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from inboxes.credentials import tokens_load
from inboxes.models import Mailbox, MailboxStatus, Provider
from inboxes.oauth_connect import oauth_mailbox_connect

pytest_plugins = ["tests.support.browser", "tests.support.fakes.microsoft"]
pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("loopback_only"),
    # Query-mode callbacks are deliberate (see inboxes/providers/graph/signin.py).
    pytest.mark.filterwarnings("ignore:response_mode=.form_post. is recommended:UserWarning"),
]


class _TrustingBrowser:
    """The module's Chromium, whose new contexts accept the fake's test-CA certificate."""

    def __init__(self, browser) -> None:
        self._browser = browser

    def new_context(self, **options):
        return self._browser.new_context(ignore_https_errors=True, **options)


@pytest.fixture
def ms_pages(pages, fake_microsoft):
    """``pages`` (with all its checks) whose contexts can open the fake's consent page."""
    pages.browser = _TrustingBrowser(pages.browser)
    return pages


def test_a_member_connects_microsoft_365_through_the_consent_page(
    ms_pages, member, password, fake_microsoft
):
    fake = fake_microsoft
    fake.add_user("bo@acme.example.com", "Bo Lee")
    fake.sign_in_as = "bo@acme.example.com"

    # Given Bo is on Settings > Email
    page = ms_pages.log_in("bo@acme.example.com", password)

    # When he clicks "Connect Microsoft 365"
    page.get_by_role("button", name="Connect Microsoft 365").click()

    # Then Microsoft asks him to allow access as his account
    expect(page).to_have_url(re.compile(re.escape(fake.authority) + r"/oauth2/v2\.0/authorize\?"))
    expect(page.locator("#account")).to_have_text("bo@acme.example.com")
    ms_pages.screenshot(page, "microsoft-consent")

    # When he allows it
    page.get_by_role("link", name="Allow").click()

    # Then he is back on Settings > Email with the mailbox connected
    expect(page).to_have_url(ms_pages.base_url + "/settings/email/")
    expect(page.locator("#messages")).to_have_text(
        "bo@acme.example.com is connected; its mail is being synced."
    )
    row = page.locator("#mailboxes tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("bo@acme.example.com")
    expect(row).to_contain_text("Microsoft 365")
    expect(row.locator(".badge")).to_have_text("Connected")
    ms_pages.screenshot(page, "microsoft-connected")

    # And the mailbox is his, with the tokens Microsoft issued, encrypted
    mailbox = Mailbox.objects.get()
    assert (mailbox.owner, mailbox.kind, mailbox.provider, mailbox.status) == (
        member,
        "personal",
        Provider.MICROSOFT,
        MailboxStatus.CONNECTED,
    )
    tokens = tokens_load(mailbox)
    assert fake.active_refresh_tokens("bo@acme.example.com") == [tokens.refresh_token]
    assert tokens.refresh_token.encode() not in bytes(mailbox.secrets_ciphertext)


def test_connecting_an_address_another_user_holds_ends_in_the_conflict_message(
    ms_pages, member, other_member, password, fake_microsoft
):
    fake = fake_microsoft
    # Given Cy has connected cy@ through Microsoft 365
    fake.add_user("cy@acme.example.com", "Cy Young")
    held = oauth_mailbox_connect(
        actor=other_member,
        provider=Provider.MICROSOFT,
        grant=fake.grant("cy@acme.example.com"),
        kind="personal",
    )
    tokens_before = tokens_load(held)

    # When Bo signs in to Microsoft as cy@ from his own Settings > Email
    page = ms_pages.log_in("bo@acme.example.com", password)
    fake.sign_in_as = "cy@acme.example.com"
    page.get_by_role("button", name="Connect Microsoft 365").click()
    expect(page.locator("#account")).to_have_text("cy@acme.example.com")
    ms_pages.problems.expect_console_error(r"status of 409")
    page.get_by_role("link", name="Allow").click()

    # Then Postkamer refuses, says the address is in use, but not by whom (R6)
    result = page.locator("#connect-result")
    expect(result.get_by_role("heading")).to_have_text("cy@acme.example.com was not connected")
    expect(page.locator("#conflict")).to_contain_text("already in use in your account")
    expect(page.locator("#conflict")).to_contain_text("Ask an account admin")
    expect(result).to_contain_text("Nothing was stored.")
    expect(page.locator("main")).not_to_contain_text("Cy Young")
    ms_pages.screenshot(page, "microsoft-conflict")

    # And nothing was stored: cy@ is still Cy's alone, with his own tokens
    held.refresh_from_db()
    assert list(Mailbox.objects.all()) == [held]
    assert held.owner == other_member and held.status == MailboxStatus.CONNECTED
    assert tokens_load(held) == tokens_before
