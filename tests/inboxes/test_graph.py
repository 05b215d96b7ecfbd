"""Microsoft 365: the real msal and requests against the fake identity platform and Graph.

Every test talks HTTPS to tests/support/fakes/microsoft.py on 127.0.0.1 (any other name
lookup fails, see ``loopback_only``) and drives Postkamer's own services: the
connect views, ``mailbox_sync``, the outbox.
"""

from __future__ import annotations

import email
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email import policy
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from django.db import transaction

from audit.models import AuditEvent
from conversations.handling import conversation_reply
from conversations.models import Conversation
from inboxes.credentials import tokens_load, tokens_store
from inboxes.history import mailbox_import_history
from inboxes.models import (
    FolderRole,
    Mailbox,
    MailboxFolder,
    MailboxMessage,
    MailboxStatus,
    OutboxItem,
    Provider,
)
from inboxes.oauth_connect import oauth_mailbox_connect
from inboxes.outbox import outbox_resolve_unknown
from inboxes.providers.base import ProviderError
from inboxes.providers.graph.session import INBOX, SENT, GraphSession
from inboxes.providers.graph.signin import MicrosoftOAuthClient
from inboxes.sync import mailbox_reconcile, mailbox_sync, mailboxes_due
from tests.support.mail import make_email, send_due, team_inbox

pytest_plugins = ["tests.support.fakes.microsoft"]  # fake_microsoft, loopback_only
pytestmark = [
    pytest.mark.django_db,
    pytest.mark.usefixtures("loopback_only"),
    # Query-mode callbacks are deliberate (see inboxes/providers/graph/signin.py); pytest resets
    # the module's own warning filter for each test.
    pytest.mark.filterwarnings("ignore:response_mode=.form_post. is recommended:UserWarning"),
]

SUPPORT = "support@acme.example.com"
CUSTOMER = "carol@customer.example.com"
REDIRECT = "http://testserver/connect/microsoft/callback/"
CALLBACK = "/connect/microsoft/callback/"


# --- helpers ------------------------------------------------------------------------------------


def delivered(fake, count: int, *, start: datetime | None = None, prefix: str = "Question"):
    """``count`` customer emails in the team inbox, a minute apart; their Graph ids."""
    start = start or datetime.now(UTC) - timedelta(days=2)
    return [
        fake.deliver(
            SUPPORT,
            make_email(subject=f"{prefix} {n}", to=SUPPORT),
            received=start + timedelta(minutes=n),
        )
        for n in range(count)
    ]


def inbox_folder(mailbox) -> MailboxFolder:
    return MailboxFolder.objects.get(mailbox=mailbox, role=FolderRole.INBOX)


def stored_keys(mailbox) -> list[str]:
    return list(
        MailboxMessage.objects.filter(folder__mailbox=mailbox, folder__role=FolderRole.INBOX)
        .order_by("id")
        .values_list("provider_key", flat=True)
    )


def reply_to(admin, conversation, text: str = "Thanks, we are on it."):
    with transaction.atomic():
        message = conversation_reply(actor=admin, conversation=conversation, text=text)
    return message, OutboxItem.objects.get(message=message)


@pytest.fixture
def fake(fake_microsoft):
    return fake_microsoft


@pytest.fixture
def support(fake, admin):
    """The Support inbox with support@ connected as its Microsoft 365 team email."""
    inbox = team_inbox(admin.account)
    fake.add_user(SUPPORT, "Acme Support")
    mailbox = oauth_mailbox_connect(
        actor=admin,
        provider=Provider.MICROSOFT,
        grant=fake.grant(SUPPORT),
        kind="team",
        inbox=inbox,
        acknowledge_team_visibility=True,
    )
    return inbox, mailbox


# --- signing in ---------------------------------------------------------------------------------


def test_the_consent_flow_yields_tokens_and_the_address_from_graph_me(fake):
    fake.add_user("Ann.Smith@acme.example.com", "Ann Smith")
    fake.sign_in_as = "ann.smith@acme.example.com"
    client = MicrosoftOAuthClient()

    url, flow = client.begin(redirect_uri=REDIRECT, login_hint="typed@elsewhere.example.com")
    assert url.startswith(fake.authority + "/oauth2/v2.0/authorize?")
    params = fake.consent(url)
    grant = client.complete(flow=flow, params=params, redirect_uri=REDIRECT)

    # The address is the account's mail from /me, not what anybody typed.
    assert grant.address == "Ann.Smith@acme.example.com"
    assert grant.provider_user_id == fake.user("ann.smith@acme.example.com").id
    assert grant.tokens.access_token in fake.access_tokens
    assert fake.active_refresh_tokens(grant.address) == [grant.tokens.refresh_token]
    assert grant.tokens.expires_at > time.time() + 3000
    [asked] = fake.authorize_requests
    assert set(asked["scope"].split()) == {
        "Mail.ReadWrite",
        "Mail.Send",
        "User.Read",
        "offline_access",
        "openid",
        "profile",
    }  # nothing more than the mail it reads and sends
    assert asked["code_challenge_method"] == "S256" and asked["nonce"] and asked["state"]
    assert asked["redirect_uri"] == REDIRECT and asked["prompt"] == "select_account"
    assert [r["grant_type"] for r in fake.token_requests] == ["authorization_code"]

    # The code is single-use: a replayed answer fails cleanly.
    with pytest.raises(ProviderError, match="invalid_grant"):
        client.complete(flow=flow, params=params, redirect_uri=REDIRECT)
    # An answer for another state never reaches the token endpoint (msal's ValueError).
    with pytest.raises(ProviderError, match="does not belong to this sign-in"):
        client.complete(flow=flow, params={**params, "state": "forged"}, redirect_uri=REDIRECT)
    assert len(fake.token_requests) == 2


def test_pkce_is_checked_and_an_account_without_mail_uses_its_user_principal_name(fake):
    fake.add_user("bo@acme.example.com", "Bo Lee", has_mail=False)
    fake.sign_in_as = "bo@acme.example.com"
    client = MicrosoftOAuthClient()

    url, flow = client.begin(redirect_uri=REDIRECT)
    stolen = fake.consent(url)
    with pytest.raises(ProviderError, match="Code_Verifier"):
        client.complete(
            flow={**flow, "code_verifier": "not-the-verifier"}, params=stolen, redirect_uri=REDIRECT
        )

    url, flow = client.begin(redirect_uri=REDIRECT)
    grant = client.complete(flow=flow, params=fake.consent(url), redirect_uri=REDIRECT)
    assert grant.address == "bo@acme.example.com"


def test_a_forged_missing_or_declined_answer_is_a_400_and_the_real_one_works_once(
    client, member, fake
):
    client.force_login(member)
    assert client.get(CALLBACK, {"state": "bogus", "code": "x"}).status_code == 400
    assert client.get(CALLBACK, {"code": "x"}).status_code == 400

    fake.add_user("bo@acme.example.com", "Bo Lee")
    start = client.get("/connect/microsoft/", {"kind": "personal"})
    assert start.status_code == 302 and start["Location"].startswith(fake.authority)
    fake.sign_in_as = "bo@acme.example.com"
    params = fake.consent(start["Location"])
    assert client.get(CALLBACK, {**params, "state": params["state"] + "x"}).status_code == 400
    assert not Mailbox.objects.exists()

    answered = client.get(CALLBACK, params)
    assert answered.status_code == 302 and answered["Location"] == "/settings/email/"
    mailbox = Mailbox.objects.get()
    assert (mailbox.address, mailbox.owner, mailbox.provider) == (
        "bo@acme.example.com",
        member,
        Provider.MICROSOFT,
    )
    assert client.get(CALLBACK, params).status_code == 400  # replayed

    declined = client.get("/connect/microsoft/", {"kind": "personal"})
    response = client.get(CALLBACK, fake.consent(declined["Location"], decision="deny"))
    assert response.status_code == 400
    assert b"cancelled or refused" in response.content
    assert Mailbox.objects.count() == 1


def test_an_address_another_user_holds_is_refused_and_no_token_is_stored(
    client, member, other_member, fake
):
    fake.add_user("cy@acme.example.com", "Cy Young")
    held = oauth_mailbox_connect(
        actor=other_member,
        provider=Provider.MICROSOFT,
        grant=fake.grant("cy@acme.example.com"),
        kind="personal",
    )
    tokens_before = tokens_load(held)

    client.force_login(member)
    start = client.get("/connect/microsoft/", {"kind": "personal"})
    fake.sign_in_as = "cy@acme.example.com"
    response = client.get(CALLBACK, fake.consent(start["Location"]))

    assert response.status_code == 409
    page = response.content.decode()
    assert "cy@acme.example.com was not connected" in page and "Nothing was stored." in page
    assert "Cy Young" not in page  # R6: a member only learns that the address is in use
    held.refresh_from_db()
    assert Mailbox.objects.get() == held and held.owner == other_member
    assert tokens_load(held) == tokens_before
    assert AuditEvent.objects.filter(action="mailbox.connect_refused").exists()


# --- reading ------------------------------------------------------------------------------------


def test_the_first_sync_pages_through_a_delta_round_into_the_team_inbox(support, fake):
    inbox, mailbox = support
    fake.max_page_size = 2
    ids = delivered(fake, 5)
    fake.deliver(
        SUPPORT,
        make_email(subject="Older than the backfill window"),
        received=datetime.now(UTC) - timedelta(days=90),
    )

    result = mailbox_sync(mailbox.pk)

    assert result.imported == 5
    assert stored_keys(mailbox) == ids  # oldest first, though Graph listed newest first
    assert sorted(Conversation.objects.filter(inbox=inbox).values_list("subject", flat=True)) == [
        f"Question {n}" for n in range(5)
    ]
    rounds = fake.graph_requests("GET", "/messages/delta")
    assert len(rounds) == 3  # pages of 2, 2 and 1
    # A team email is addressed by its address, never as /me.
    assert all(
        unquote(r.path).startswith(f"/v1.0/users/{SUPPORT}/mailFolders/inbox/") for r in rounds
    )
    assert not fake.graph_requests(contains="/v1.0/me/mailFolders")
    assert "receivedDateTime ge" in unquote(rounds[0].path)
    assert all(r.headers["prefer"] == "odata.maxpagesize=100" for r in rounds)
    assert "$skiptoken=" in rounds[1].path and "$skiptoken=" in rounds[2].path
    assert "$deltatoken=" in inbox_folder(mailbox).cursor["delta_link"]
    mailbox.refresh_from_db()
    assert mailbox.status == MailboxStatus.CONNECTED


def test_a_personal_email_reads_its_inbox_and_sent_items_as_me(member, fake):
    fake.add_user("bo@acme.example.com", "Bo Lee")
    mailbox = oauth_mailbox_connect(
        actor=member,
        provider=Provider.MICROSOFT,
        grant=fake.grant("bo@acme.example.com"),
        kind="personal",
    )
    fake.deliver("bo@acme.example.com", make_email(to="bo@acme.example.com"))
    fake.deliver("bo@acme.example.com", make_email(sender="bo@acme.example.com"), "sentitems")

    result = mailbox_sync(mailbox.pk)

    assert set(result.folders) == {"inbox", "sent"}
    paths = [unquote(r.path) for r in fake.graph_requests("GET", "/messages/delta")]
    assert [p.split("?")[0] for p in paths] == [
        "/v1.0/me/mailFolders/inbox/messages/delta",
        "/v1.0/me/mailFolders/sentitems/messages/delta",
    ]
    assert not fake.graph_requests(contains="/v1.0/users/")


def test_later_rounds_bring_only_new_mail_and_deleting_at_microsoft_deletes_nothing(support, fake):
    inbox, mailbox = support
    first, second = delivered(fake, 2)
    assert mailbox_sync(mailbox.pk).imported == 2

    [new] = delivered(fake, 1, prefix="Follow-up", start=datetime.now(UTC) - timedelta(hours=1))
    fake.touch(SUPPORT, first)  # marked read in Outlook: listed again, not new
    fake.delete(SUPPORT, second)  # arrives as @removed
    result = mailbox_sync(mailbox.pk)

    assert result.imported == 1
    assert "$deltatoken=" in fake.graph_requests("GET", "/messages/delta")[-1].path
    assert stored_keys(mailbox) == [first, second, new]
    assert Conversation.objects.filter(inbox=inbox).count() == 3

    assert mailbox_sync(mailbox.pk).imported == 0  # re-running changes nothing
    assert Conversation.objects.filter(inbox=inbox).count() == 3


def test_an_expired_delta_state_starts_a_new_round_without_duplicates(support, fake):
    inbox, mailbox = support
    delivered(fake, 3)
    assert mailbox_sync(mailbox.pk).imported == 3

    fake.expire_delta_tokens()
    delivered(fake, 1, prefix="After the reset", start=datetime.now(UTC) - timedelta(hours=1))
    result = mailbox_sync(mailbox.pk)

    assert 410 in [r.status for r in fake.graph_requests("GET", "/messages/delta")]
    assert result.imported == 1
    assert MailboxMessage.objects.filter(folder__mailbox=mailbox).count() == 4
    assert Conversation.objects.filter(inbox=inbox).count() == 4
    assert inbox_folder(mailbox).resync_count == 1
    assert mailbox_sync(mailbox.pk).imported == 0


def test_429_and_503_are_retried_after_their_retry_after(support, fake):
    _, mailbox = support
    delivered(fake, 2)
    fake.fail_next(429, retry_after=1, match="/messages/delta")
    fake.fail_next(503, retry_after=0, match="/$value")

    started = time.monotonic()
    assert mailbox_sync(mailbox.pk).imported == 2
    assert time.monotonic() - started >= 1.0  # the 429's Retry-After: 1 was waited out
    statuses = [r.status for r in fake.graph_requests("GET", "/messages/delta")]
    assert statuses[:2] == [429, 200]
    assert 503 in [r.status for r in fake.graph_requests("GET", "/$value")]


def test_a_retry_after_beyond_the_bound_is_left_to_the_next_run(support, fake):
    _, mailbox = support
    delivered(fake, 1)
    fake.fail_next(429, retry_after=3600, match="/messages/delta")

    started = time.monotonic()
    with pytest.raises(ProviderError) as caught:
        mailbox_sync(mailbox.pk)
    assert time.monotonic() - started < 5
    assert not caught.value.permanent  # transient: the task retries later
    mailbox.refresh_from_db()
    assert mailbox.status == MailboxStatus.CONNECTED and mailbox.sync_state == "error"
    assert mailbox_sync(mailbox.pk).imported == 1


def test_downloads_run_in_parallel_but_never_more_than_four_per_mailbox(support, fake):
    _, mailbox = support
    ids = delivered(fake, 12)
    fake.graph_delay = 0.1

    assert mailbox_sync(mailbox.pk).imported == 12
    assert 2 <= fake.max_in_flight[SUPPORT] <= 4

    # Two sessions on the same mailbox (e.g. a sync and an outbox lookup) share the four.
    fake.max_in_flight.clear()
    with GraphSession(mailbox) as one, GraphSession(mailbox) as two:
        fetched: list[int] = []
        threads = [
            threading.Thread(target=lambda s=s: fetched.append(len(list(s.fetch(INBOX, ids)))))
            for s in (one, two)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=20)
    assert fetched == [12, 12]
    assert fake.max_in_flight[SUPPORT] <= 4


def test_reconciliation_lists_the_folder_and_fills_a_gap(support, fake):
    _, mailbox = support
    fake.max_page_size = 2
    ids = delivered(fake, 3)
    assert mailbox_sync(mailbox.pk).imported == 3
    MailboxMessage.objects.filter(provider_key=ids[1]).delete()  # a gap in the ledger

    result = mailbox_reconcile(mailbox.pk)

    assert (result.missing_before, result.missing_after) == (1, 0)
    listed = fake.graph_requests("GET", f"/users/{SUPPORT}/mailFolders/inbox/messages?")
    assert len(listed) == 2 and "$skip=2" in unquote(listed[1].path)  # followed the nextLink
    assert sorted(stored_keys(mailbox)) == sorted(ids)


def test_older_mail_imported_later_lists_only_what_lies_before_the_window(support, admin, fake):
    inbox, mailbox = support
    now = datetime.now(UTC)
    [recent] = delivered(fake, 1)
    old = fake.deliver(
        SUPPORT, make_email(subject="Months ago", to=SUPPORT), received=now - timedelta(days=100)
    )
    fake.deliver(
        SUPPORT, make_email(subject="Years ago", to=SUPPORT), received=now - timedelta(days=900)
    )
    assert mailbox_sync(mailbox.pk).imported == 1
    window = inbox_folder(mailbox).backfill_from

    mailbox_import_history(actor=admin, mailbox=mailbox, backfill_days=365)
    fake.requests.clear()
    result = mailbox_sync(mailbox.pk)

    assert (result.imported, result.history) == (1, 1)
    [listing] = fake.graph_requests("GET", f"/users/{SUPPORT}/mailFolders/inbox/messages?")
    [expression] = parse_qs(urlsplit(listing.path).query)["$filter"]
    since, before = (term.rsplit(" ", 1)[1] for term in expression.split(" and "))
    assert abs(datetime.fromisoformat(since) - (now - timedelta(days=365))) < timedelta(minutes=1)
    assert datetime.fromisoformat(before) == window.replace(microsecond=0) + timedelta(seconds=1)
    assert set(stored_keys(mailbox)) == {recent, old}
    assert Conversation.objects.get(inbox=inbox, subject="Months ago").assignee is None
    assert inbox_folder(mailbox).backfill_from < now - timedelta(days=364)
    assert mailbox_sync(mailbox.pk).imported == 0


# --- tokens ---------------------------------------------------------------------------------------


def test_a_rotated_refresh_token_is_stored_at_once_even_when_the_next_call_fails(support, fake):
    _, mailbox = support
    old = tokens_load(mailbox)
    tokens_store(mailbox, replace(old, expires_at=time.time() + 30))  # about to expire
    fake.fail_next(500, match="/messages/delta")

    with pytest.raises(ProviderError):
        mailbox_sync(mailbox.pk)

    mailbox.refresh_from_db()
    new = tokens_load(mailbox)
    assert new.refresh_token != old.refresh_token
    assert fake.active_refresh_tokens(SUPPORT) == [new.refresh_token]  # the old one is spent
    assert fake.token_requests[-1]["grant_type"] == "refresh_token"
    delivered(fake, 1)
    assert mailbox_sync(mailbox.pk).imported == 1  # the next run goes on with what was stored


def test_a_401_gets_one_fresh_token_and_the_call_goes_through(support, fake):
    _, mailbox = support
    delivered(fake, 1)
    fake.expire_access_tokens()  # Graph stops accepting the token before its expiry

    assert mailbox_sync(mailbox.pk).imported == 1
    assert [r["grant_type"] for r in fake.token_requests].count("refresh_token") == 1
    assert [r.status for r in fake.graph_requests("GET", "/messages/delta")][:2] == [401, 200]


def test_a_second_401_in_a_row_means_sign_in_again(support, fake):
    _, mailbox = support
    fake.reject_all_tokens = True

    with pytest.raises(ProviderError) as caught:
        mailbox_sync(mailbox.pk)

    assert caught.value.reauth
    mailbox.refresh_from_db()
    assert mailbox.status == MailboxStatus.NEEDS_REAUTH
    assert mailbox.pk not in mailboxes_due()


def test_a_revoked_grant_stops_syncing_until_the_same_account_reconnects(
    client, admin, support, fake
):
    inbox, mailbox = support
    delivered(fake, 2)
    assert mailbox_sync(mailbox.pk).imported == 2
    assert mailbox.pk in mailboxes_due()

    fake.revoke(SUPPORT)
    [waiting] = delivered(
        fake, 1, prefix="While away", start=datetime.now(UTC) - timedelta(hours=1)
    )
    with pytest.raises(ProviderError) as caught:
        mailbox_sync(mailbox.pk)
    assert caught.value.reauth
    mailbox.refresh_from_db()
    assert mailbox.status == MailboxStatus.NEEDS_REAUTH and "invalid_grant" in mailbox.last_error
    assert mailbox.pk not in mailboxes_due()
    assert mailbox_sync(mailbox.pk).ran is False

    # Reconnecting with another account is refused and changes nothing.
    client.force_login(admin)
    fake.add_user("sales@acme.example.com")
    start = client.get("/connect/microsoft/", {"reconnect": str(mailbox.pk)})
    assert parse_qs(urlsplit(start["Location"]).query)["login_hint"] == [SUPPORT]
    fake.sign_in_as = "sales@acme.example.com"
    refused = client.get(CALLBACK, fake.consent(start["Location"]))
    assert (
        refused.status_code == 400 and b"You signed in as sales@acme.example.com" in refused.content
    )
    mailbox.refresh_from_db()
    assert mailbox.status == MailboxStatus.NEEDS_REAUTH

    # The same account (the login hint picks it) brings it back, history and cursor kept.
    fake.sign_in_as = None
    start = client.get("/connect/microsoft/", {"reconnect": str(mailbox.pk)})
    assert client.get(CALLBACK, fake.consent(start["Location"])).status_code == 302
    mailbox.refresh_from_db()
    assert mailbox.status == MailboxStatus.CONNECTED
    assert Mailbox.objects.get() == mailbox
    assert mailbox.pk in mailboxes_due()
    assert mailbox_sync(mailbox.pk).imported == 1
    assert stored_keys(mailbox)[-1] == waiting
    assert Conversation.objects.filter(inbox=inbox).count() == 3


# --- sending --------------------------------------------------------------------------------------


def test_a_reply_leaves_once_as_a_sent_draft_with_its_headers(support, admin, fake):
    inbox, mailbox = support
    first = make_email(subject="Broken widget", to=SUPPORT)
    fake.deliver(SUPPORT, first)
    mailbox_sync(mailbox.pk)
    first_id = email.message_from_bytes(first, policy=policy.default)["Message-ID"]

    message, item = reply_to(admin, Conversation.objects.get(inbox=inbox))
    assert send_due(item) == "sent"
    assert send_due(item) == "sent"  # a second run sends nothing

    [sent] = fake.sent
    mime = email.message_from_bytes(sent.raw, policy=policy.default)
    assert mime["From"] == "Acme Support <support@acme.example.com>"
    assert mime["To"] == CUSTOMER and sent.recipients == [CUSTOMER]
    assert mime["Subject"] == "Re: Broken widget"
    assert mime["In-Reply-To"] == first_id and first_id in mime["References"]
    assert mime["Message-ID"] == message.message_id == sent.internet_message_id
    draft, send = fake.graph_requests("POST", f"/users/{SUPPORT}/messages")
    assert draft.headers["content-type"] == "text/plain" and draft.status == 201
    assert send.path.endswith("/send") and send.status == 202
    assert not fake.folder(SUPPORT, "drafts")
    assert [m.internet_message_id for m in fake.folder(SUPPORT, "sentitems")] == [
        message.message_id
    ]
    item.refresh_from_db()
    assert item.state == "sent" and item.detail.startswith("202") and item.data_started_at


def test_a_message_id_microsoft_assigns_replaces_ours(support, admin, fake):
    inbox, mailbox = support
    fake.deliver(SUPPORT, make_email(to=SUPPORT))
    mailbox_sync(mailbox.pk)
    fake.assign_message_ids = True

    message, item = reply_to(admin, Conversation.objects.get(inbox=inbox))
    ours = message.message_id
    assert send_due(item) == "sent"

    message.refresh_from_db()
    assert message.message_id == fake.sent[0].internet_message_id != ours


def test_a_refused_send_fails_with_microsofts_reason_and_leaves_no_draft(support, admin, fake):
    inbox, mailbox = support
    fake.deliver(SUPPORT, make_email(to=SUPPORT))
    mailbox_sync(mailbox.pk)
    _, item = reply_to(admin, Conversation.objects.get(inbox=inbox))
    fake.fail_next(429, retry_after=0, match="/send")
    fake.fail_next(400, code="ErrorInvalidRecipients", match="/send")

    assert send_due(item) == "failed"
    item.refresh_from_db()
    assert "ErrorInvalidRecipients" in item.detail
    assert not fake.sent and not fake.folder(SUPPORT, "drafts")


def test_a_send_without_an_answer_is_unknown_never_resent_and_then_found_in_sent_items(
    support, admin, fake, settings
):
    inbox, mailbox = support
    fake.deliver(SUPPORT, make_email(to=SUPPORT))
    mailbox_sync(mailbox.pk)
    message, item = reply_to(admin, Conversation.objects.get(inbox=inbox))
    settings.PROVIDER_HTTP_TIMEOUT = 1
    fake.hold_sends()  # Microsoft sends, but answers only after the client gave up

    assert send_due(item) == "unknown"
    item.refresh_from_db()
    assert item.state == "unknown" and item.data_started_at
    assert "not sent again automatically" in item.detail
    assert send_due(item) == "unknown"  # not queued: nothing is sent again

    fake.release_sends()
    fake.wait_idle()
    assert len(fake.graph_requests("POST", "/send")) == 1 and len(fake.sent) == 1
    assert outbox_resolve_unknown(item.pk) == "sent"
    item.refresh_from_db()
    assert item.state == "sent" and "Found in the Sent folder" in item.detail
    lookups = fake.graph_requests("GET", f"/users/{SUPPORT}/mailFolders/{SENT.name}/messages")
    assert lookups and all(message.message_id in unquote(r.path) for r in lookups)
    assert len(fake.sent) == 1


def test_a_worker_that_dies_between_microsofts_accept_and_the_database_update_sends_once(
    support, admin, fake, monkeypatch
):
    from datetime import timedelta

    from django.utils import timezone

    from inboxes.outbox import outbox_sweep
    from inboxes.outbox import run as outbox_run

    inbox, mailbox = support
    fake.deliver(SUPPORT, make_email(to=SUPPORT))
    mailbox_sync(mailbox.pk)
    message, item = reply_to(admin, Conversation.objects.get(inbox=inbox))
    real_mark = outbox_run.record_state

    def killed_before_recording(item, state, detail, **extra):
        if state == "sent":
            raise SystemExit("worker killed")  # Microsoft has it; our row still says sending
        real_mark(item, state, detail, **extra)

    monkeypatch.setattr(outbox_run, "record_state", killed_before_recording)
    with pytest.raises(SystemExit):
        send_due(item)
    monkeypatch.setattr(outbox_run, "record_state", real_mark)
    item.refresh_from_db()
    assert item.state == "sending" and item.data_started_at is not None

    OutboxItem.objects.filter(pk=item.pk).update(claimed_at=timezone.now() - timedelta(hours=1))
    assert outbox_sweep()["unknown"] == 1
    item.refresh_from_db()
    assert item.state == "sent"
    assert send_due(item) == "sent"
    fake.wait_idle()
    assert len(fake.sent) == 1 and len(fake.graph_requests("POST", "/send")) == 1
