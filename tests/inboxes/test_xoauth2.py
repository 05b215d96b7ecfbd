"""IMAP and SMTP sign-in with XOAUTH2 against a real Dovecot and aiosmtpd.

Dovecot checks every token through its oauth2 passdb (token introspection on
a local HTTP server); aiosmtpd through its XOAUTH2 mechanism. The sign-in
provider's OAuth client is a fake whose ``refresh`` asks the same authority
for a new token, so an expired, refused or revoked token plays out end to end.
"""

from __future__ import annotations

import email
import time
import uuid
from email import policy
from typing import TYPE_CHECKING

import pytest
from django.db import transaction

from conversations.models import Conversation
from inboxes.addresses import canonical_address
from inboxes.connection_test import ConnectionTestResult, run_connection_test
from inboxes.credentials import OAuthTokens, tokens_load, tokens_store
from inboxes.models import AuthMethod, Mailbox, MailboxKind, MailboxStatus, Provider
from inboxes.outbox import Recipient, outbox_create
from inboxes.providers import signin
from inboxes.providers.base import ProviderError
from inboxes.providers.imap.session import ImapSession
from inboxes.providers.imap.transport import SmtpTransport
from inboxes.sync import mailbox_sync, mailboxes_due
from tests.support.mail import make_email, send_due, team_inbox

if TYPE_CHECKING:
    from tests.support.oauth_mailservers import OAuthDovecotServer, OAuthSMTPServer, TokenAuthority

# The OAuth-capable servers; imported by pytest itself (not above) so that its
# assertion rewriting and fixture registration see the module first.
pytestmark = pytest.mark.django_db

ADDRESS = "support@acme.example.com"


class FakeOAuthClient:
    """The sign-in provider's side of a refresh (the OAuthClient protocol's ``refresh``)."""

    provider = "gmail"
    label = "Gmail"

    def __init__(self, authority: TokenAuthority, username: str) -> None:
        self.authority = authority
        self.username = username
        self.refreshed_with: list[str] = []  # the refresh tokens it was given
        self.grant_revoked = False
        self.issue_unknown_tokens = False  # tokens the mail servers will not accept

    def refresh(self, tokens: OAuthTokens) -> OAuthTokens:
        self.refreshed_with.append(tokens.refresh_token)
        if self.grant_revoked:
            raise ProviderError("invalid_grant: Token has been expired or revoked.", reauth=True)
        access = (
            "ya29.unknown-" + uuid.uuid4().hex
            if self.issue_unknown_tokens
            else self.authority.issue(self.username)
        )
        return OAuthTokens(
            access_token=access,
            refresh_token=f"1//rotated-{len(self.refreshed_with)}",
            expires_at=time.time() + 3600,
            scope="https://mail.google.com/",
        )


@pytest.fixture
def fake_client(monkeypatch, token_authority, oauth_user) -> FakeOAuthClient:
    client = FakeOAuthClient(token_authority, oauth_user)
    calls = []

    def oauth_client(provider):
        calls.append(provider)
        return client

    monkeypatch.setattr(signin, "oauth_client", oauth_client)
    client.providers_asked = calls
    return client


@pytest.fixture
def xoauth2_mailbox(admin, oauth_dovecot, oauth_smtp_server, token_authority, oauth_user):
    """A team mailbox on the OAuth Dovecot/aiosmtpd that signs in with XOAUTH2."""

    def build(*, access_token: str | None = None, expires_in: float = 3600) -> Mailbox:
        imap = oauth_dovecot.oauth_settings(oauth_user)
        smtp = oauth_smtp_server.oauth_settings(oauth_user)
        mailbox = Mailbox.objects.create(
            account=admin.account,
            address=ADDRESS,
            canonical_address=canonical_address(ADDRESS),
            kind=MailboxKind.TEAM,
            connected_by=admin,
            provider=Provider.IMAP,
            imap_host=imap.host,
            imap_port=imap.port,
            imap_security=imap.security,
            imap_username=imap.username,
            smtp_host=smtp.host,
            smtp_port=smtp.port,
            smtp_security=smtp.security,
            smtp_username=smtp.username,
            auth_method=AuthMethod.XOAUTH2,
            oauth_provider=Provider.GMAIL,
        )
        tokens_store(
            mailbox,
            OAuthTokens(
                access_token=access_token
                if access_token is not None
                else token_authority.issue(oauth_user),
                refresh_token="1//original",
                expires_at=time.time() + expires_in,
                scope="https://mail.google.com/",
            ),
        )
        inbox = team_inbox(admin.account)
        inbox.mailbox = mailbox
        inbox.save()
        return mailbox

    return build


def _stored(mailbox: Mailbox) -> OAuthTokens:
    return tokens_load(Mailbox.objects.get(pk=mailbox.pk))


def _send(mailbox: Mailbox, subject: str = "Hello over XOAUTH2"):
    with transaction.atomic():
        item = outbox_create(
            mailbox=mailbox,
            from_name="Acme Support",
            to=[Recipient("carol@customer.example.com", "Carol")],
            subject=subject,
            text="Sent with a bearer token.",
        )
    return item, send_due(item)


def _received(smtp_server: OAuthSMTPServer, subject: str):
    return [
        m
        for m in smtp_server.messages
        if email.message_from_bytes(m.data, policy=policy.default)["Subject"] == subject
    ]


# --- Sync and send with a valid token -----------------------------------------------------------


def test_an_xoauth2_mailbox_syncs_from_dovecot(
    xoauth2_mailbox, fake_client, oauth_dovecot, oauth_user, token_authority
):
    mailbox = xoauth2_mailbox()
    token = _stored(mailbox).access_token
    oauth_dovecot.deliver(oauth_user, make_email(subject="Token-borne question"))

    result = mailbox_sync(mailbox.pk)

    assert result.imported == 1
    assert Conversation.objects.get().subject == "Token-borne question"
    mailbox.refresh_from_db()
    assert mailbox.status == MailboxStatus.CONNECTED and mailbox.last_error == ""
    assert token in token_authority.introspections  # Dovecot checked this very token
    assert fake_client.refreshed_with == []  # a fresh token is used as it is
    assert fake_client.providers_asked == []  # ... without even making a provider client


# The run stores the Sent copy from a thread of its own, whose database connection
# must see the mailbox (its token is read there).
@pytest.mark.django_db(transaction=True)
def test_an_xoauth2_mailbox_sends_through_the_outbox(
    xoauth2_mailbox, fake_client, oauth_smtp_server, oauth_dovecot, oauth_user
):
    mailbox = xoauth2_mailbox()
    token = _stored(mailbox).access_token

    item, state = _send(mailbox, "Sent with XOAUTH2")

    assert state == "sent"
    [received] = _received(oauth_smtp_server, "Sent with XOAUTH2")
    assert received.login == oauth_user and received.tls
    assert oauth_smtp_server.xoauth2_logins[-1].token == token
    assert oauth_smtp_server.xoauth2_logins[-1].accepted
    item.refresh_from_db()
    # the copy in Sent went over IMAP XOAUTH2 too
    assert item.sent_copy_stored
    sent = oauth_dovecot.maildir(oauth_user) / ".Sent" / "cur"
    assert len(list(sent.iterdir())) == 1


# --- Refresh ----------------------------------------------------------------------------------------


def test_an_expired_access_token_is_refreshed_and_the_login_succeeds(
    xoauth2_mailbox, fake_client, oauth_dovecot, oauth_user, token_authority
):
    old = token_authority.issue(oauth_user)
    token_authority.revoke(old)  # an expired token is no longer valid at the provider
    mailbox = xoauth2_mailbox(access_token=old, expires_in=-60)
    oauth_dovecot.deliver(oauth_user, make_email(subject="After a refresh"))

    assert mailbox_sync(mailbox.pk).imported == 1

    assert fake_client.refreshed_with == ["1//original"]
    assert fake_client.providers_asked == ["gmail"]  # the mailbox's sign-in provider
    stored = _stored(mailbox)
    assert stored.access_token != old and stored.fresh()
    assert stored.refresh_token == "1//rotated-1"
    assert old not in token_authority.introspections  # refreshed before, not after, a login
    assert stored.access_token in token_authority.introspections


def test_a_token_the_imap_server_refuses_is_refreshed_once_and_the_login_retried(
    xoauth2_mailbox, fake_client, oauth_dovecot, oauth_user, token_authority
):
    mailbox = xoauth2_mailbox()
    refused = _stored(mailbox).access_token
    token_authority.revoke(refused)  # looks fresh to us, dead at the provider
    oauth_dovecot.deliver(oauth_user, make_email(subject="Retried"))

    assert mailbox_sync(mailbox.pk).imported == 1

    assert fake_client.refreshed_with == ["1//original"]
    stored = _stored(mailbox)
    assert stored.access_token != refused and stored.fresh()
    assert token_authority.introspections[-2:] == [refused, stored.access_token]
    mailbox.refresh_from_db()
    assert mailbox.status == MailboxStatus.CONNECTED


def test_a_token_the_smtp_server_refuses_is_refreshed_once_and_the_send_goes_out(
    xoauth2_mailbox, fake_client, oauth_smtp_server, oauth_user, token_authority
):
    mailbox = xoauth2_mailbox()
    refused = _stored(mailbox).access_token
    token_authority.revoke(refused)

    _item, state = _send(mailbox, "Sent after a retry")

    assert state == "sent"
    assert len(_received(oauth_smtp_server, "Sent after a retry")) == 1
    fresh = _stored(mailbox).access_token
    logins = [(login.token, login.accepted) for login in oauth_smtp_server.xoauth2_logins]
    assert logins[-2:] == [(refused, False), (fresh, True)]
    assert fake_client.refreshed_with[0] == "1//original"


# --- Dead grants ------------------------------------------------------------------------------------


def test_a_revoked_grant_needs_reauth_and_the_mailbox_is_no_longer_polled(
    xoauth2_mailbox, fake_client, oauth_dovecot, oauth_user, token_authority
):
    mailbox = xoauth2_mailbox()
    assert mailbox.pk in mailboxes_due()
    # the user revoked the app's access: the access token and the refresh token die
    token_authority.revoke_user(oauth_user)
    fake_client.grant_revoked = True

    with pytest.raises(ProviderError) as caught:
        mailbox_sync(mailbox.pk)

    assert caught.value.reauth
    mailbox.refresh_from_db()
    assert mailbox.status == MailboxStatus.NEEDS_REAUTH
    assert "revoked" in mailbox.last_error
    assert mailbox.pk not in mailboxes_due()
    assert mailbox_sync(mailbox.pk).ran is False
    assert fake_client.refreshed_with == ["1//original"]  # tried once, not hammered


def test_a_fresh_token_refused_again_needs_reauth_after_one_retry(
    xoauth2_mailbox, fake_client, oauth_dovecot, token_authority
):
    mailbox = xoauth2_mailbox()
    token_authority.revoke(_stored(mailbox).access_token)
    fake_client.issue_unknown_tokens = True  # the refresh "works", the server still says no

    with pytest.raises(ProviderError) as caught:
        mailbox_sync(mailbox.pk)

    assert caught.value.reauth
    assert "also after a refresh" in str(caught.value)
    assert "[AUTHENTICATIONFAILED]" in str(caught.value)
    assert len(fake_client.refreshed_with) == 1
    mailbox.refresh_from_db()
    assert mailbox.status == MailboxStatus.NEEDS_REAUTH
    assert mailbox.pk not in mailboxes_due()


def test_a_send_with_a_dead_grant_waits_for_the_reconnect_and_marks_the_mailbox(
    xoauth2_mailbox, fake_client, oauth_smtp_server, token_authority, oauth_user
):
    mailbox = xoauth2_mailbox()
    token_authority.revoke_user(oauth_user)
    fake_client.issue_unknown_tokens = True

    item, state = _send(mailbox, "Not yet")

    assert state == "queued"  # not the message's fault: it is not failed for good
    item.refresh_from_db()
    assert "Waiting for" in item.detail and "535" in item.detail
    assert _received(oauth_smtp_server, "Not yet") == []
    mailbox.refresh_from_db()
    assert mailbox.status == MailboxStatus.NEEDS_REAUTH
    assert send_due(item) == "queued"  # nothing happens until the reconnect


# --- Not a verdict on the token -----------------------------------------------------------------


def test_a_token_check_outage_is_transient_not_a_reason_to_sign_in_again(
    xoauth2_mailbox, fake_client, oauth_dovecot, token_authority
):
    mailbox = xoauth2_mailbox()
    token_authority.outage = True
    try:
        with pytest.raises(ProviderError) as caught:
            mailbox_sync(mailbox.pk)
    finally:
        token_authority.outage = False

    assert not caught.value.permanent and not caught.value.reauth
    assert "[UNAVAILABLE]" in str(caught.value)
    assert fake_client.refreshed_with == []  # the token was not blamed
    mailbox.refresh_from_db()
    assert mailbox.status == MailboxStatus.CONNECTED and mailbox.sync_state == "error"
    assert mailbox_sync(mailbox.pk).ran  # and the next poll works


def test_servers_without_xoauth2_are_a_permanent_error_not_a_dead_token(
    xoauth2_mailbox, fake_client, dovecot, smtp_server
):
    mailbox = xoauth2_mailbox()
    # the password-only Dovecot and aiosmtpd of tests/support/mailservers.py
    Mailbox.objects.filter(pk=mailbox.pk).update(
        imap_port=dovecot.imaps_port, smtp_port=smtp_server.port
    )
    mailbox.refresh_from_db()

    with pytest.raises(ProviderError) as imap_error:
        ImapSession(mailbox, timeout=5).__enter__()
    with pytest.raises(ProviderError) as smtp_error:
        SmtpTransport(mailbox, timeout=5).__enter__()

    assert "IMAP server does not offer XOAUTH2" in str(imap_error.value)
    assert "SMTP server does not offer XOAUTH2" in str(smtp_error.value)
    for caught in (imap_error, smtp_error):
        assert caught.value.permanent and not caught.value.reauth
    assert fake_client.refreshed_with == []
    mailbox.refresh_from_db()
    assert mailbox.status == MailboxStatus.CONNECTED


# --- An injected token source --------------------------------------------------------------------


def test_sessions_take_an_injected_token_source_and_ask_it_again_once(
    xoauth2_mailbox, oauth_smtp_server, token_authority, oauth_user
):
    mailbox = xoauth2_mailbox(access_token="never-used")
    good = token_authority.issue(oauth_user)
    handed = []

    def source_of(*tokens):
        queue = list(tokens)

        def source():
            handed.append(queue[0])
            return queue.pop(0) if len(queue) > 1 else queue[0]

        return source

    with ImapSession(mailbox, timeout=5, token_source=source_of("bad", good)) as session:
        assert [f.name for f in session.folders()][0] == "INBOX"
    assert handed == ["bad", good]

    handed.clear()
    with SmtpTransport(mailbox, timeout=5, token_source=source_of("bad", good)):
        pass
    assert handed == ["bad", good]

    with pytest.raises(ProviderError) as caught:
        ImapSession(mailbox, timeout=5, token_source=source_of("bad", "worse")).__enter__()
    assert caught.value.reauth
    # an injected source is its own keeper: the stored tokens and the status are untouched
    assert _stored(mailbox).access_token == "never-used"
    mailbox.refresh_from_db()
    assert mailbox.status == MailboxStatus.CONNECTED


# --- The connection test ------------------------------------------------------------------------


def _steps(result: ConnectionTestResult) -> list[tuple[str, bool]]:
    return [(step.step, step.ok) for step in result.steps]


def test_the_connection_test_signs_in_with_xoauth2(
    oauth_dovecot: OAuthDovecotServer,
    oauth_smtp_server: OAuthSMTPServer,
    token_authority: TokenAuthority,
    oauth_user: str,
):
    token = token_authority.issue(oauth_user)
    result = run_connection_test(
        imap=oauth_dovecot.oauth_settings(oauth_user),
        smtp=oauth_smtp_server.oauth_settings(oauth_user),
        timeout=5,
        oauth_token=token,
    )
    assert _steps(result) == [
        (step, True) for step in ("dns", "tcp", "tls", "auth", "imap_select", "smtp")
    ]
    details = {step.step: step.detail for step in result.steps}
    assert details["auth"] == f"Logged in as {oauth_user} with XOAUTH2."
    assert details["smtp"].endswith(f"logged in as {oauth_user} with XOAUTH2.")
    assert oauth_smtp_server.xoauth2_logins[-1].token == token
    assert token not in str(result.as_dict())


def test_the_connection_test_fails_clearly_with_a_bad_token(
    oauth_dovecot: OAuthDovecotServer,
    oauth_smtp_server: OAuthSMTPServer,
    oauth_user: str,
):
    bad = "ya29.not-a-token-anyone-issued"
    result = run_connection_test(
        imap=oauth_dovecot.oauth_settings(oauth_user),
        smtp=oauth_smtp_server.oauth_settings(oauth_user),
        timeout=5,
        oauth_token=bad,
    )
    assert _steps(result) == [("dns", True), ("tcp", True), ("tls", True), ("auth", False)]
    assert result.failed_step == "auth"
    assert result.steps[-1].detail == (
        "Sign-in with the access token was refused: [AUTHENTICATIONFAILED] Authentication failed."
    )
    assert bad not in str(result.as_dict())


def test_the_connection_test_reports_an_smtp_refusal_of_the_token(
    oauth_dovecot: OAuthDovecotServer,
    oauth_smtp_server: OAuthSMTPServer,
    token_authority: TokenAuthority,
    oauth_user: str,
):
    # the token is good for the IMAP user, not for the SMTP user name given
    token = token_authority.issue(oauth_user)
    result = run_connection_test(
        imap=oauth_dovecot.oauth_settings(oauth_user),
        smtp=oauth_smtp_server.oauth_settings("someone-else"),
        timeout=5,
        oauth_token=token,
    )
    assert result.failed_step == "smtp"
    assert result.steps[-1].detail == (
        "auth: sign-in with the access token was refused: "
        "535 5.7.8 Username and Password not accepted (invalid token)"
    )


def test_the_connection_test_says_when_a_server_has_no_xoauth2(
    oauth_dovecot: OAuthDovecotServer,
    smtp_server,
    token_authority: TokenAuthority,
    oauth_user: str,
):
    token = token_authority.issue(oauth_user)
    result = run_connection_test(
        imap=oauth_dovecot.oauth_settings(oauth_user),
        smtp=smtp_server.smtp_settings(oauth_user, ""),  # password-only aiosmtpd
        timeout=5,
        oauth_token=token,
    )
    assert result.failed_step == "smtp"
    assert result.steps[-1].detail == "auth: the server does not offer XOAUTH2 sign-in"
