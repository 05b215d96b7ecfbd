"""The Gmail provider: the real Google client libraries (google-auth-oauthlib,
google-auth, google-api-python-client over httplib2) against the fake Google
in tests/support/fakes/google.py, over TLS on 127.0.0.1, through the real sync service,
outbox and connect views.
"""

from __future__ import annotations

import email
import time
from email import policy
from urllib.parse import parse_qs, urlsplit

import pytest
from django.db import transaction

from audit.models import AuditEvent
from conversations.handling import conversation_reply
from conversations.models import Conversation
from inboxes.credentials import OAuthGrant, OAuthTokens, tokens_load, tokens_store
from inboxes.history import mailbox_import_history as history_import
from inboxes.models import (
    Mailbox,
    MailboxFolder,
    MailboxMessage,
    MailboxStatus,
    Message,
    OutboxItem,
    OutboxState,
    Provider,
)
from inboxes.oauth_connect import oauth_mailbox_connect
from inboxes.outbox import outbox_resolve_unknown, outbox_send_run, outbox_sweep
from inboxes.outbox import run as outbox_run
from inboxes.providers.base import ProviderError
from inboxes.providers.gmail import api as gmail_api
from inboxes.providers.gmail import http as gmail_http
from inboxes.providers.gmail import session as gmail_session
from inboxes.providers.gmail import transport as gmail_transport
from inboxes.providers.gmail.signin import SCOPES, GoogleOAuthClient
from inboxes.sync import mailbox_sync, mailboxes_due
from tests.support.mail import make_email, send_due, team_inbox

pytest_plugins = ["tests.support.fakes.google"]
pytestmark = pytest.mark.django_db

SUPPORT = "support@acme.example.com"
CALLBACK = "http://testserver/connect/gmail/callback/"


@pytest.fixture(autouse=True)
def waits(monkeypatch) -> list[float]:
    """Every backoff the provider asks for, recorded instead of slept."""
    recorded: list[float] = []
    monkeypatch.setattr(gmail_api, "_sleep", recorded.append)
    return recorded


def grant_for(fake, address: str) -> OAuthGrant:
    """Tokens as a finished consent would give them (the flow itself is tested below)."""
    access, refresh = fake.issue_tokens(address, scope=" ".join(SCOPES))
    return OAuthGrant(
        tokens=OAuthTokens(access, refresh, time.time() + 3600, " ".join(SCOPES)),
        address=address,
        provider_user_id=address,
    )


@pytest.fixture
def support(admin, fake_google):
    """A Support inbox fed by a Gmail team mailbox."""
    inbox = team_inbox(admin.account)
    mailbox = oauth_mailbox_connect(
        actor=admin,
        provider=Provider.GMAIL,
        grant=grant_for(fake_google, SUPPORT),
        kind="team",
        inbox=inbox,
        acknowledge_team_visibility=True,
    )
    return inbox, mailbox


def since_epoch(mailbox) -> float:
    """The start of the backfill window the sync asks Gmail for (``after:``)."""
    return time.time() - mailbox.backfill_days * 86400


def deliver(fake, count: int, **kwargs) -> list[str]:
    return [fake.deliver(SUPPORT, make_email(**kwargs)) for _ in range(count)]


def browse_consent(client, fake, start: str, *, as_address: str | None) -> object:
    """Start at ``start`` in Postkamer, click "Allow" on Google's page, come back."""
    response = client.get(start)
    assert response.status_code == 302, response.content
    assert response["Location"].startswith(fake.base_url + "/o/oauth2/auth?")
    fake.consent_as = as_address
    callback = urlsplit(fake.consent(response["Location"]))
    assert f"{callback.scheme}://{callback.netloc}{callback.path}" == CALLBACK
    return client.get(f"{callback.path}?{callback.query}")


# --- signing in -----------------------------------------------------------------------------


def test_the_consent_flow_gives_tokens_and_the_address_from_the_profile(fake_google):
    client = GoogleOAuthClient()
    url, flow = client.begin(redirect_uri=CALLBACK, login_hint="")

    # The consent page is asked for offline access, both scopes and a PKCE challenge.
    query = parse_qs(urlsplit(url).query)
    assert url.startswith(fake_google.base_url + "/o/oauth2/auth?")
    assert set(query["scope"][0].split()) == set(SCOPES)
    assert "https://www.googleapis.com/auth/gmail.modify" not in query["scope"][0]
    assert (query["access_type"], query["prompt"]) == (["offline"], ["consent"])
    assert query["code_challenge_method"] == ["S256"] and query["state"] == [flow["state"]]
    assert len(flow["code_verifier"]) >= 43

    fake_google.consent_as = "Ann.Smith@gmail.com"
    params = {k: v[0] for k, v in parse_qs(urlsplit(fake_google.consent(url)).query).items()}
    assert params["state"] == flow["state"]
    grant = client.complete(flow=flow, params=params, redirect_uri=CALLBACK)

    assert grant.address == "Ann.Smith@gmail.com" == grant.provider_user_id
    assert fake_google.refresh_tokens[grant.tokens.refresh_token]["valid"]
    assert fake_google.access_tokens[grant.tokens.access_token]["address"] == grant.address
    assert grant.tokens.fresh() and set(grant.tokens.scope.split()) == set(SCOPES)

    # The code is single-use, and only the verifier of this flow redeems it.
    with pytest.raises(ProviderError, match="refused"):
        client.complete(flow=flow, params=params, redirect_uri=CALLBACK)
    url, flow = client.begin(redirect_uri=CALLBACK)
    params = {k: v[0] for k, v in parse_qs(urlsplit(fake_google.consent(url)).query).items()}
    with pytest.raises(ProviderError, match="refused"):
        client.complete(
            flow={**flow, "code_verifier": "x" * 64}, params=params, redirect_uri=CALLBACK
        )


def test_connecting_through_the_views_stores_the_mailbox_with_its_tokens_encrypted(
    client, member, fake_google
):
    client.force_login(member)
    response = browse_consent(
        client, fake_google, "/connect/gmail/?kind=personal", as_address="Bo.Lee@gmail.com"
    )

    assert response.status_code == 302 and response["Location"] == "/settings/email/"
    mailbox = Mailbox.objects.get()
    assert (mailbox.address, mailbox.canonical_address) == ("Bo.Lee@gmail.com", "bolee@gmail.com")
    assert (mailbox.provider, mailbox.kind, mailbox.owner, mailbox.status) == (
        "gmail",
        "personal",
        member,
        "connected",
    )
    tokens = tokens_load(mailbox)
    assert fake_google.refresh_tokens[tokens.refresh_token]["valid"]
    assert tokens.refresh_token.encode() not in bytes(mailbox.secrets_ciphertext)
    assert tokens.access_token.encode() not in bytes(mailbox.secrets_ciphertext)


def test_a_consent_without_the_send_permission_is_refused_and_stores_nothing(
    client, member, fake_google
):
    client.force_login(member)
    fake_google.unticked_scopes = {"https://www.googleapis.com/auth/gmail.send"}

    response = browse_consent(
        client, fake_google, "/connect/gmail/?kind=personal", as_address="bo.lee@gmail.com"
    )

    assert response.status_code == 502
    assert b"needs both permissions" in response.content
    assert not Mailbox.objects.exists()


def test_a_forged_missing_or_replayed_state_answers_400_not_500(client, member, fake_google):
    client.force_login(member)
    assert client.get("/connect/gmail/callback/?state=bogus&code=x").status_code == 400
    assert client.get("/connect/gmail/callback/?code=x").status_code == 400

    # A real round trip, then the same callback replayed: the state was used up.
    response = client.get("/connect/gmail/?kind=personal")
    fake_google.consent_as = "bo.lee@gmail.com"
    callback = urlsplit(fake_google.consent(response["Location"]))
    assert client.get(f"{callback.path}?{callback.query}").status_code == 302
    replay = client.get(f"{callback.path}?{callback.query}")
    assert replay.status_code == 400
    assert b"could not be checked" in replay.content
    assert Mailbox.objects.count() == 1


def test_a_connect_refused_by_r1_stores_neither_a_token_nor_a_mailbox(
    client, member, other_member, fake_google
):
    # Bo has connected his Gmail as his personal email.
    bos = oauth_mailbox_connect(
        actor=member,
        provider=Provider.GMAIL,
        grant=grant_for(fake_google, "bo.lee@gmail.com"),
        kind="personal",
    )
    stored = bytes(bos.secrets_ciphertext)

    # Cy signs in to the same Google account (Gmail ignores the dots).
    client.force_login(other_member)
    response = browse_consent(
        client, fake_google, "/connect/gmail/?kind=personal", as_address="BoLee@gmail.com"
    )

    assert response.status_code == 409
    assert b"already in use" in response.content and b"Nothing was stored" in response.content
    assert list(Mailbox.objects.all()) == [bos]
    bos.refresh_from_db()
    assert bytes(bos.secrets_ciphertext) == stored
    assert AuditEvent.objects.filter(action="mailbox.connect_refused", actor=other_member).exists()


def test_the_sign_in_keeps_the_history_chosen_through_the_round_trip(
    client, member, admin, fake_google
):
    client.force_login(member)
    response = client.get("/settings/email/")
    page = response.content.decode()
    assert 'action="/connect/gmail/"' in page and 'id="backfill-gmail"' in page
    # The form leads to Google's consent page: the page's CSP lets it (form-action).
    [form_action] = [
        rule
        for rule in response.headers["Content-Security-Policy"].split(";")
        if rule.strip().startswith("form-action")
    ]
    assert form_action.split()[1:] == ["'self'", fake_google.base_url]

    response = browse_consent(
        client,
        fake_google,
        "/connect/gmail/?kind=personal&backfill_days=365",
        as_address="bo.lee@gmail.com",
    )
    assert response.status_code == 302
    assert Mailbox.objects.get(address="bo.lee@gmail.com").backfill_days == 365

    browse_consent(
        client, fake_google, "/connect/gmail/?kind=personal&backfill_days=all", as_address="b@x.com"
    )
    assert Mailbox.objects.get(address="b@x.com").backfill_days is None

    # A window that is not offered never reaches Google.
    refused = client.get("/connect/gmail/?kind=personal&backfill_days=45")
    assert refused.status_code == 302 and refused["Location"] == "/settings/email/"
    assert not [key for key, _ in client.session.items() if key.startswith("oauth-flow:")]

    # A team email, from Settings > Inboxes, keeps it too.
    client.force_login(admin)
    inbox = team_inbox(admin.account)
    assert f'id="backfill-gmail-{inbox.pk}"' in client.get("/settings/inboxes/").content.decode()
    browse_consent(
        client,
        fake_google,
        f"/connect/gmail/?kind=team&inbox={inbox.pk}&acknowledge_team_visibility=on"
        "&backfill_days=0",
        as_address=SUPPORT,
    )
    assert Mailbox.objects.get(address=SUPPORT).backfill_days == 0


# --- reading --------------------------------------------------------------------------------


def test_the_initial_sync_pages_and_batches_into_conversations_and_a_rerun_adds_nothing(
    support, fake_google, monkeypatch
):
    inbox, mailbox = support
    monkeypatch.setattr(gmail_session, "LIST_PAGE_SIZE", 3)
    monkeypatch.setattr(gmail_session, "FETCH_BATCH_SIZE", 3)
    delivered = deliver(fake_google, 7)
    fake_google.deliver(
        SUPPORT, make_email(subject="Too old"), internal_date=time.time() - 60 * 86400
    )
    fake_google.deliver(SUPPORT, make_email(subject="Our own"), labels=["SENT"])
    history_before = fake_google.account(SUPPORT).history_id

    result = mailbox_sync(mailbox.pk)

    # Seven inside the 30-day window, from INBOX only: three list pages, three batches.
    assert result.imported == 7
    assert Conversation.objects.filter(inbox=inbox).count() == 7
    assert not Message.objects.filter(subject__in=["Too old", "Our own"]).exists()
    assert fake_google.calls.count("GET /gmail/v1/users/me/messages") == 3
    assert fake_google.calls.count("POST /batch/gmail/v1") == 3
    assert len(fake_google.calls_to("GET /gmail/v1/users/me/messages/")) == 7  # batch parts
    [query] = set(fake_google.searches)  # the same backfill window on every page
    assert abs(int(query.removeprefix("after:")) - since_epoch(mailbox)) < 60
    folder = MailboxFolder.objects.get(mailbox=mailbox)
    assert folder.cursor == {"history_id": str(history_before)}
    assert folder.server_count == 8  # the INBOX label also holds the old one
    keys = list(
        MailboxMessage.objects.filter(folder=folder)
        .order_by("id")
        .values_list("provider_key", flat=True)
    )
    assert keys == delivered  # oldest first
    mailbox.refresh_from_db()
    assert (mailbox.status, mailbox.sync_state, mailbox.sync_done) == ("connected", "idle", 7)

    fake_google.calls.clear()
    again = mailbox_sync(mailbox.pk)
    assert again.imported == 0 and Message.objects.count() == 7
    assert fake_google.calls_to("/history") and not fake_google.calls_to("/batch/")


def test_the_incremental_sync_reads_history_and_misses_nothing_that_arrives_mid_listing(
    support, fake_google, monkeypatch
):
    inbox, mailbox = support
    deliver(fake_google, 2)
    real_list = gmail_session.GmailSession._list_ids

    def listing_while_mail_arrives(self, label, since):
        fake_google.deliver(SUPPORT, make_email(subject="During the listing"))
        keys = real_list(self, label, since)
        fake_google.deliver(SUPPORT, make_email(subject="Right after the listing"))
        return keys

    monkeypatch.setattr(gmail_session.GmailSession, "_list_ids", listing_while_mail_arrives)
    assert mailbox_sync(mailbox.pk).imported == 3
    monkeypatch.setattr(gmail_session.GmailSession, "_list_ids", real_list)

    fake_google.calls.clear()
    deliver(fake_google, 2, subject="Later")
    fake_google.deliver(SUPPORT, make_email(subject="Draft"), labels=["DRAFT"])
    result = mailbox_sync(mailbox.pk)

    # The history since the pre-listing cursor: the late one and the two new ones;
    # the one listed already is not fetched again.
    assert result.imported == 3
    assert Message.objects.count() == 6
    assert Message.objects.filter(subject="Right after the listing").count() == 1
    assert Message.objects.filter(subject="During the listing").count() == 1
    assert not Message.objects.filter(subject="Draft").exists()
    assert fake_google.calls_to("GET /gmail/v1/users/me/history")
    assert "GET /gmail/v1/users/me/messages" not in fake_google.calls  # no listing
    folder = MailboxFolder.objects.get(mailbox=mailbox)
    assert folder.cursor == {"history_id": str(fake_google.account(SUPPORT).history_id)}


def test_an_expired_history_id_lists_everything_again_without_duplicates(support, fake_google):
    inbox, mailbox = support
    deliver(fake_google, 3)
    mailbox_sync(mailbox.pk)
    fake_google.expire_history(SUPPORT)
    deliver(fake_google, 1)

    result = mailbox_sync(mailbox.pk)

    assert result.imported == 1
    assert Message.objects.count() == 4 and Conversation.objects.filter(inbox=inbox).count() == 4
    folder = MailboxFolder.objects.get(mailbox=mailbox)
    assert folder.resync_count == 1
    assert folder.cursor == {"history_id": str(fake_google.account(SUPPORT).history_id)}
    assert AuditEvent.objects.filter(action="mailbox.folder_reset").count() == 1
    assert mailbox_sync(mailbox.pk).imported == 0  # the new cursor works again


def test_older_mail_imported_later_lists_only_what_lies_before_the_window(
    support, admin, fake_google
):
    inbox, mailbox = support
    [recent] = deliver(fake_google, 1, subject="Last week")
    day = 86400
    old = fake_google.deliver(
        SUPPORT, make_email(subject="Months ago"), internal_date=time.time() - 100 * day
    )
    fake_google.deliver(
        SUPPORT, make_email(subject="Years ago"), internal_date=time.time() - 900 * day
    )
    assert mailbox_sync(mailbox.pk).imported == 1
    window = MailboxFolder.objects.get(mailbox=mailbox).backfill_from

    history_import(actor=admin, mailbox=mailbox, backfill_days=365)
    fake_google.searches.clear()
    fake_google.calls.clear()
    result = mailbox_sync(mailbox.pk)

    assert (result.imported, result.history) == (1, 1)
    [query] = fake_google.searches  # only the older part of the window
    after, before = (int(term.partition(":")[2]) for term in query.split())
    assert abs(after - (time.time() - 365 * day)) < 60
    assert before == int(window.timestamp()) + 1
    assert len(fake_google.calls_to("GET /gmail/v1/users/me/messages/")) == 1  # the old one
    assert sorted(Message.objects.values_list("subject", flat=True)) == ["Last week", "Months ago"]
    keys = set(MailboxMessage.objects.values_list("provider_key", flat=True))
    assert keys == {recent, old}
    conversation = Conversation.objects.get(subject="Months ago")
    assert conversation.assignee is None
    assert mailbox_sync(mailbox.pk).imported == 0


def test_rate_limits_are_waited_out_and_a_deleted_message_is_skipped(support, fake_google, waits):
    inbox, mailbox = support
    ids = deliver(fake_google, 4)
    fake_google.fail_next(429, "/gmail/v1/users/me/messages", method="GET", retry_after=2)
    fake_google.fail_next(403, "/batch/", reason="userRateLimitExceeded")
    fake_google.fail_next(429, f"/messages/{ids[1]}")  # one item of the batch
    fake_google.fail_next(404, f"/messages/{ids[2]}")  # deleted before it was fetched

    result = mailbox_sync(mailbox.pk)

    assert result.imported == 3
    assert waits[0] == 2.0  # Retry-After honoured
    assert len(waits) == 3 and all(0 < w <= gmail_http.BACKOFF_MAX_SECONDS for w in waits)
    assert sorted(MailboxMessage.objects.values_list("provider_key", flat=True)) == sorted(
        [ids[0], ids[1], ids[3]]
    )
    mailbox.refresh_from_db()
    assert mailbox.status == "connected"


def test_a_personal_mailbox_syncs_inbox_and_sent(member, fake_google):
    mailbox = oauth_mailbox_connect(
        actor=member,
        provider=Provider.GMAIL,
        grant=grant_for(fake_google, "bo.lee@gmail.com"),
        kind="personal",
    )
    fake_google.deliver("bo.lee@gmail.com", make_email(to="bo.lee@gmail.com"))
    fake_google.deliver("bo.lee@gmail.com", make_email(sender="bo.lee@gmail.com"), ["SENT"])

    result = mailbox_sync(mailbox.pk)

    assert result.folders == {"inbox": 1, "sent": 1}
    assert set(MailboxFolder.objects.values_list("role", "name")) == {
        ("inbox", "INBOX"),
        ("sent", "SENT"),
    }


# --- tokens ---------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)  # autocommit: what is stored is committed
def test_a_refresh_before_expiry_commits_the_rotated_token_before_the_next_call(
    support, fake_google
):
    inbox, mailbox = support
    old = tokens_load(mailbox)
    tokens_store(mailbox, OAuthTokens(old.access_token, old.refresh_token, time.time() + 30))
    fake_google.rotate_refresh_tokens = True
    fake_google.fail_next(400, "/gmail/v1/", reason="failedPrecondition")

    with pytest.raises(ProviderError):
        mailbox_sync(mailbox.pk)

    # The API call after the refresh failed, yet the new refresh token is stored.
    mailbox.refresh_from_db()
    new = tokens_load(mailbox)
    assert new.refresh_token != old.refresh_token
    assert fake_google.refresh_tokens[new.refresh_token]["valid"]
    assert not fake_google.refresh_tokens[old.refresh_token]["valid"]
    assert new.fresh() and new.access_token != old.access_token
    assert new.refresh_token.encode() not in bytes(mailbox.secrets_ciphertext)
    assert len(fake_google.calls_to("POST /token")) == 1


def test_a_401_renews_the_token_once_and_carries_on(support, fake_google):
    inbox, mailbox = support
    deliver(fake_google, 2)
    stale = tokens_load(mailbox).access_token
    del fake_google.access_tokens[stale]  # Google dropped it early; we still think it fresh

    assert mailbox_sync(mailbox.pk).imported == 2

    assert len(fake_google.calls_to("POST /token")) == 1
    assert tokens_load(Mailbox.objects.get(pk=mailbox.pk)).access_token != stale


def test_a_second_401_with_a_fresh_token_needs_a_new_sign_in(support, fake_google):
    inbox, mailbox = support
    fake_google.fail_next(401, "/gmail/v1/", times=2, reason="authError")

    with pytest.raises(ProviderError) as failure:
        mailbox_sync(mailbox.pk)

    assert failure.value.reauth
    assert len(fake_google.calls_to("POST /token")) == 1  # renewed once, not in a loop
    mailbox.refresh_from_db()
    assert mailbox.status == "needs_reauth" and mailbox.pk not in mailboxes_due()


def test_no_request_leaves_loopback(support, fake_google, settings):
    # The provider honours the settings; the fixture refuses any other host.
    settings.GMAIL_API_ENDPOINT = "https://gmail.googleapis.com/"

    with pytest.raises(ProviderError, match="could not be reached"):
        mailbox_sync(support[1].pk)

    assert fake_google.calls == []


def test_a_revoked_grant_stops_the_sync_and_a_new_consent_restores_the_same_mailbox(
    client, admin, support, fake_google
):
    inbox, mailbox = support
    deliver(fake_google, 2)
    mailbox_sync(mailbox.pk)
    fake_google.revoke(SUPPORT)
    deliver(fake_google, 1)

    with pytest.raises(ProviderError) as failure:
        mailbox_sync(mailbox.pk)

    assert failure.value.reauth
    mailbox.refresh_from_db()
    assert (mailbox.status, mailbox.sync_state) == ("needs_reauth", "stopped")
    assert mailbox.pk not in mailboxes_due()
    assert mailbox_sync(mailbox.pk).ran is False
    assert AuditEvent.objects.filter(action="mailbox.needs_reauth").exists()

    # The admin reconnects: Google's page is opened for the same account.
    client.force_login(admin)
    start = client.get(f"/connect/gmail/?reconnect={mailbox.pk}")
    assert parse_qs(urlsplit(start["Location"]).query)["login_hint"] == [SUPPORT]
    response = browse_consent(
        client, fake_google, f"/connect/gmail/?reconnect={mailbox.pk}", as_address=None
    )

    assert response.status_code == 302
    assert list(Mailbox.objects.all()) == [mailbox]
    mailbox.refresh_from_db()
    assert mailbox.status == MailboxStatus.CONNECTED
    assert fake_google.refresh_tokens[tokens_load(mailbox).refresh_token]["valid"]
    assert Message.objects.count() == 2  # the history is kept
    assert mailbox.pk in mailboxes_due()
    assert mailbox_sync(mailbox.pk).imported == 1


def test_reconnecting_as_another_address_is_refused(client, admin, support, fake_google):
    inbox, mailbox = support
    fake_google.revoke(SUPPORT)
    with pytest.raises(ProviderError):
        mailbox_sync(mailbox.pk)
    mailbox.refresh_from_db()
    stored = bytes(mailbox.secrets_ciphertext)

    client.force_login(admin)
    response = browse_consent(
        client,
        fake_google,
        f"/connect/gmail/?reconnect={mailbox.pk}",
        as_address="sales@acme.example.com",
    )

    assert response.status_code == 400
    assert b"You signed in as sales@acme.example.com" in response.content
    mailbox.refresh_from_db()
    assert mailbox.status == "needs_reauth" and bytes(mailbox.secrets_ciphertext) == stored
    assert Mailbox.objects.count() == 1


# --- sending ----------------------------------------------------------------------------------


def customer_conversation(fake, mailbox, subject="Broken widget") -> tuple[Conversation, str]:
    raw = make_email(subject=subject)
    gmail_id = fake.deliver(SUPPORT, raw)
    mailbox_sync(mailbox.pk)
    conversation = Conversation.objects.get(subject=subject)
    return conversation, fake.account(SUPPORT).messages[gmail_id].thread_id


def reply(admin, conversation, text="Thanks, we are on it.") -> tuple[Message, OutboxItem]:
    with transaction.atomic():
        message = conversation_reply(actor=admin, conversation=conversation, text=text)
    return message, OutboxItem.objects.get(message=message)


def parsed(raw: bytes):
    return email.message_from_bytes(raw, policy=policy.default)


def test_a_reply_leaves_once_in_the_customers_gmail_thread(support, admin, fake_google):
    inbox, mailbox = support
    conversation, thread_id = customer_conversation(fake_google, mailbox)
    first = conversation.messages.get()

    message, item = reply(admin, conversation)
    assert send_due(item) == "sent"
    assert send_due(item) == "sent"  # a second run sends nothing

    [sent] = fake_google.sent
    mime = parsed(sent.raw)
    assert mime["From"] == "Acme Support <support@acme.example.com>"
    assert mime["To"] == "carol@customer.example.com"
    assert mime["Subject"] == "Re: Broken widget"
    assert mime["In-Reply-To"] == first.message_id and first.message_id in mime["References"]
    assert mime["Message-ID"] == message.message_id
    assert (sent.via, sent.requested_thread_id, sent.thread_id) == ("json", thread_id, thread_id)
    item.refresh_from_db()
    assert item.state == "sent" and item.detail.startswith("Gmail accepted it")
    assert len(fake_google.calls_to("messages/send")) == 1


def test_a_message_id_replaced_by_gmail_is_recorded_for_threading(support, admin, fake_google):
    inbox, mailbox = support
    conversation, _ = customer_conversation(fake_google, mailbox)
    fake_google.replace_message_id = True
    message, item = reply(admin, conversation)

    assert send_due(item) == "sent"

    stored = parsed(fake_google.sent[0].raw)["Message-ID"]
    message.refresh_from_db()
    assert message.message_id == stored and stored.endswith("@mail.gmail.com>")


def test_a_large_message_goes_as_a_media_upload(support, admin, fake_google, monkeypatch):
    inbox, mailbox = support
    conversation, thread_id = customer_conversation(fake_google, mailbox)
    monkeypatch.setattr(gmail_transport, "JSON_SEND_MAX_BYTES", 10)
    message, item = reply(admin, conversation, text="A long answer.")

    assert send_due(item) == "sent"

    [sent] = fake_google.sent
    assert (sent.via, sent.thread_id) == ("upload", thread_id)
    assert parsed(sent.raw)["Message-ID"] == message.message_id
    assert "A long answer." in parsed(sent.raw).get_content()


def test_a_rate_limited_send_is_not_retried_in_place_and_goes_later(support, admin, fake_google):
    inbox, mailbox = support
    conversation, _ = customer_conversation(fake_google, mailbox)
    message, item = reply(admin, conversation)
    fake_google.fail_next(429, "/messages/send", retry_after=1)

    assert outbox_send_run(mailbox.pk).retry_in is not None  # the task runs again then

    assert fake_google.sent == [] and len(fake_google.calls_to("messages/send")) == 1
    OutboxItem.objects.filter(pk=item.pk).update(next_attempt_at=None)
    assert send_due(item) == "sent"
    assert len(fake_google.sent) == 1


def test_a_send_without_an_answer_ends_unknown_is_not_resent_and_is_found_in_sent(
    support, admin, fake_google, settings, monkeypatch
):
    inbox, mailbox = support
    conversation, _ = customer_conversation(fake_google, mailbox)
    message, item = reply(admin, conversation)
    settings.PROVIDER_HTTP_TIMEOUT = 0.5
    fake_google.send_delay = 1.5  # Gmail stores it, the answer comes after our timeout
    # As if the worker stopped right after marking it unknown: the sweeper resolves it.
    monkeypatch.setattr(outbox_run, "outbox_resolve_unknown", lambda item_id: OutboxState.UNKNOWN)

    assert send_due(item) == "unknown"

    item.refresh_from_db()
    assert item.state == "unknown" and "no answer came back" in item.detail
    assert item.data_started_at is not None
    assert send_due(item) == "unknown"  # never resent by a later run
    assert len(fake_google.sent) == 1 and len(fake_google.calls_to("messages/send")) == 1

    assert outbox_resolve_unknown(item.pk) == "sent"
    item.refresh_from_db()
    assert item.state == "sent" and item.detail.startswith("Found in the Sent folder")
    assert fake_google.searches[-1] == "rfc822msgid:" + message.message_id.strip("<>")
    assert len(fake_google.sent) == 1


def test_a_send_whose_connection_drops_is_not_sent_twice(support, admin, fake_google):
    # httplib2 would send the request again on a new connection: a second copy.
    inbox, mailbox = support
    conversation, _ = customer_conversation(fake_google, mailbox)
    message, item = reply(admin, conversation)
    fake_google.send_drop = True

    assert send_due(item) == "sent"  # resolved at once: Gmail has it in SENT

    assert len(fake_google.sent) == 1 and len(fake_google.calls_to("messages/send")) == 1
    item.refresh_from_db()
    assert item.detail == "Found in the Sent folder after the connection dropped."


def test_a_send_after_the_grant_was_revoked_waits_for_the_reconnect(support, admin, fake_google):
    inbox, mailbox = support
    conversation, _ = customer_conversation(fake_google, mailbox)
    message, item = reply(admin, conversation)
    fake_google.revoke(SUPPORT)

    assert send_due(item) == "queued"

    assert fake_google.sent == []
    mailbox.refresh_from_db()
    item.refresh_from_db()
    assert mailbox.status == "needs_reauth"
    assert item.detail.startswith(f"Waiting for {SUPPORT} to be reconnected")

    # A new consent for the same address sends it, once.
    oauth_mailbox_connect(
        actor=admin,
        provider=Provider.GMAIL,
        grant=grant_for(fake_google, SUPPORT),
        kind="team",
        reconnect=mailbox,
    )
    assert send_due(item) == "sent"
    assert len(fake_google.sent) == 1


def test_a_worker_that_dies_between_gmails_accept_and_the_database_update_sends_once(
    support, admin, fake_google, monkeypatch
):
    from datetime import timedelta

    from django.utils import timezone

    inbox, mailbox = support
    conversation, _ = customer_conversation(fake_google, mailbox)
    message, item = reply(admin, conversation)
    real_mark = outbox_run.record_state

    def killed_before_recording(item, state, detail, **extra):
        if state == OutboxState.SENT:
            raise SystemExit("worker killed")  # Gmail has it; our row still says sending
        real_mark(item, state, detail, **extra)

    monkeypatch.setattr(outbox_run, "record_state", killed_before_recording)
    with pytest.raises(SystemExit):
        send_due(item)
    monkeypatch.setattr(outbox_run, "record_state", real_mark)
    item.refresh_from_db()
    assert item.state == "sending" and item.data_started_at is not None

    # The lease runs out; the sweeper (beat) finds the item and looks it up in SENT.
    OutboxItem.objects.filter(pk=item.pk).update(claimed_at=timezone.now() - timedelta(hours=1))
    assert outbox_sweep()["unknown"] == 1
    item.refresh_from_db()
    assert item.state == "sent"
    assert send_due(item) == "sent"  # a later run sends nothing
    assert len(fake_google.sent) == 1
