"""Connecting Gmail in a real browser: Chromium clicks "Connect Gmail" on the live
server, passes the fake Google's consent page over TLS and comes back to
Settings > Email. The server side runs the real google-auth-oauthlib flow
(PKCE) and the Gmail API client against the same fake.

The ``pages`` fixture fails a test on any console error, uncaught JavaScript
error, CSP violation or request that leaves 127.0.0.1.
"""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import Page, expect

from inboxes.credentials import OAuthGrant, OAuthTokens, tokens_load
from inboxes.models import Mailbox, MailboxStatus, Provider
from inboxes.oauth_connect import oauth_mailbox_connect
from inboxes.providers.gmail.signin import SCOPES
from inboxes.sync import mailbox_sync
from tests.support.mail import make_email

pytest_plugins = ["tests.support.browser", "tests.support.fakes.google"]
pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


class _TrustingBrowser:
    """The module's Chromium, opening contexts that accept the fake Google's test
    certificate. Only these contexts do; Postkamer itself is served over HTTP."""

    def __init__(self, browser) -> None:
        self._browser = browser

    def new_context(self, **options):
        return self._browser.new_context(ignore_https_errors=True, **options)


@pytest.fixture
def google_pages(pages, fake_google):
    pages.browser = _TrustingBrowser(pages.browser)
    return pages


def connect_gmail(page: Page, fake_google) -> None:
    """Settings > Email -> "Connect Gmail" -> Google's consent page -> "Allow"."""
    page.get_by_role("button", name="Connect Gmail").click()
    expect(page).to_have_title("Sign in - Google Accounts")
    assert page.url.startswith(fake_google.base_url + "/o/oauth2/auth?")
    expect(page.locator("#account")).to_have_text(fake_google.consent_as)
    page.get_by_role("link", name="Allow").click()


def test_a_member_connects_gmail_through_the_consent_page_and_it_syncs(
    google_pages, member, password, fake_google
):
    # Given Bo's Gmail holds a message, and he is on Settings > Email
    fake_google.deliver("Bo.Lee@gmail.com", make_email(to="bo.lee@gmail.com"))
    fake_google.consent_as = "bo.lee@gmail.com"  # typed in lower case on Google's page
    page = google_pages.log_in("bo@acme.example.com", password)

    # When he connects Gmail and allows access on Google's page
    connect_gmail(page, fake_google)

    # Then he is back on Settings > Email with the mailbox connected, under the address
    # Google's profile gives, and a sync on its way
    expect(page).to_have_url(google_pages.base_url + "/settings/email/")
    expect(page.locator("#messages")).to_have_text(
        "Bo.Lee@gmail.com is connected; its mail is being synced."
    )
    row = page.locator("#mailboxes tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("Bo.Lee@gmail.com")
    expect(row).to_contain_text("Gmail")
    expect(row.locator(".badge")).to_have_text("Connected")
    google_pages.screenshot(page, "gmail-connected")

    # And the address came from Google's profile, the tokens are stored encrypted
    mailbox = Mailbox.objects.get()
    assert (mailbox.provider, mailbox.owner, mailbox.status) == ("gmail", member, "connected")
    tokens = tokens_load(mailbox)
    assert fake_google.refresh_tokens[tokens.refresh_token]["valid"]
    assert tokens.refresh_token.encode() not in bytes(mailbox.secrets_ciphertext)

    # When a worker runs the sync it was given
    result = mailbox_sync(mailbox.pk)
    assert result.ran and result.folders == {"inbox": 1, "sent": 0}

    # Then the row says it is synced
    page.reload()
    expect(row.locator(".badge")).to_have_text("Connected")
    expect(row.locator(".sync-progress")).to_contain_text("Idle")
    expect(row.locator(".sync-progress")).to_contain_text("ago")


def test_connecting_a_gmail_address_another_member_holds_ends_in_the_conflict_message(
    google_pages, member, other_member, password, fake_google
):
    # Given Bo has connected his Gmail
    access, refresh = fake_google.issue_tokens("bo.lee@gmail.com", scope=" ".join(SCOPES))
    bos = oauth_mailbox_connect(
        actor=member,
        provider=Provider.GMAIL,
        grant=OAuthGrant(
            tokens=OAuthTokens(access, refresh, time.time() + 3600, " ".join(SCOPES)),
            address="bo.lee@gmail.com",
        ),
        kind="personal",
    )
    stored = bytes(bos.secrets_ciphertext)

    # When Cy connects Gmail and signs in to the same Google account
    fake_google.consent_as = "BoLee@gmail.com"  # Gmail ignores the dot: the same address
    page = google_pages.log_in("cy@acme.example.com", password)
    google_pages.problems.expect_console_error(r"status of 409")
    connect_gmail(page, fake_google)

    # Then he reads that the address is in use, not by whom, and that nothing was stored
    result = page.locator("#connect-result")
    expect(result.get_by_role("heading")).to_have_text("BoLee@gmail.com was not connected")
    expect(result.locator("#conflict")).to_contain_text(
        "BoLee@gmail.com is already in use in your account."
    )
    expect(result).to_contain_text("Nothing was stored.")
    expect(page.locator("main")).not_to_contain_text("Bo Lee")
    google_pages.screenshot(page, "gmail-conflict")

    # And Bo's mailbox is untouched; Cy has none
    assert list(Mailbox.objects.all()) == [bos]
    bos.refresh_from_db()
    assert bos.status == MailboxStatus.CONNECTED and bytes(bos.secrets_ciphertext) == stored
    assert not Mailbox.objects.filter(owner=other_member).exists()
