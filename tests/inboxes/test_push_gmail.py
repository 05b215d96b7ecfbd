"""Gmail push: ``users.watch`` kept per mailbox, and ``/hooks/gmail/`` taking Pub/Sub's
pushes, their OIDC tokens checked by google-auth against the signing certificates that
the fake Google serves (tests/support/fakes/pubsub.py signs them with a test key; the
``fake_pubsub`` fixture installs its certs URL as the trusted one).

Most tests push through Django's test client and run the syncs a push queued in this
process; the last one is end to end: the fake delivers and pushes over HTTP to a live
server, and a real Celery worker makes the watch and syncs.
"""

from __future__ import annotations

import time
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.utils import timezone

from conversations.models import Conversation
from inboxes import tasks
from inboxes.credentials import OAuthGrant, OAuthTokens
from inboxes.models import Mailbox, MailboxMessage, Message, Provider, PushChannel, PushStatus
from inboxes.oauth_connect import oauth_mailbox_connect
from inboxes.providers.gmail import api as gmail_api
from inboxes.providers.gmail.signin import SCOPES
from inboxes.push import oidc
from inboxes.push.renewal import keep_all_push_channels, keep_push_channel
from inboxes.push.state import mailbox_push_view
from inboxes.services import mailbox_disconnect
from inboxes.sync import mailbox_sync, mailboxes_due
from tests.support.mail import make_email, team_inbox

# The fakes are plugins (fixtures) and helper modules: have pytest rewrite their asserts
# although this module imports them before pytest_plugins is read.
pytest.register_assert_rewrite(
    "tests.support.fakes.google", "tests.support.fakes.pubsub", "tests.support.workers"
)
from tests.support.fakes.pubsub import CERTS_PATH, client_sender  # noqa: E402
from tests.support.workers import wait_until  # noqa: E402

pytest_plugins = [
    "tests.support.fakes.google",
    "tests.support.fakes.pubsub",
    "tests.support.workers",
]

SUPPORT = "support@acme.example.com"
HOOK = "/hooks/gmail/"


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    """Backoffs not slept; Google's keys fetched afresh in every test."""
    monkeypatch.setattr(gmail_api, "_sleep", lambda seconds: None)
    oidc.forget_certs()
    yield
    oidc.forget_certs()


def grant_for(fake, address: str) -> OAuthGrant:
    access, refresh = fake.issue_tokens(address, scope=" ".join(SCOPES))
    return OAuthGrant(
        tokens=OAuthTokens(access, refresh, time.time() + 3600, " ".join(SCOPES)),
        address=address,
        provider_user_id=address,
    )


@pytest.fixture
def queued(monkeypatch) -> list[str]:
    """The syncs queued (``sync_mailbox.delay``), recorded; a push channel's keeping
    (``keep_push_channel.delay``, queued on connect) runs at once, as a worker would."""
    syncs: list[str] = []
    monkeypatch.setattr(tasks, "sync_mailbox", SimpleNamespace(delay=syncs.append))
    monkeypatch.setattr(tasks, "keep_push_channel", SimpleNamespace(delay=keep_push_channel))
    return syncs


def connect(admin, fake_google, capture, address: str = SUPPORT) -> Mailbox:
    """A Gmail team mailbox connected as the consent flow would, its on-commit work run."""
    with capture(execute=True):
        mailbox = oauth_mailbox_connect(
            actor=admin,
            provider=Provider.GMAIL,
            grant=grant_for(fake_google, address),
            kind="team",
            inbox=team_inbox(admin.account, name=f"Support {address}"),
            acknowledge_team_visibility=True,
        )
    mailbox.refresh_from_db()
    return mailbox


@pytest.fixture
def hook(client, fake_pubsub, settings):
    """Pushes go to /hooks/gmail/ through the test client, for the default audience."""
    fake_pubsub.endpoint = HOOK
    fake_pubsub.audience = settings.PUBLIC_URL + HOOK
    fake_pubsub.sender = client_sender(client)
    return fake_pubsub


@pytest.fixture
def watched(db, admin, fake_google, hook, queued, django_capture_on_commit_callbacks):
    """A Gmail mailbox with its watch, its first sync done, no sync queued."""
    mailbox = connect(admin, fake_google, django_capture_on_commit_callbacks)
    mailbox_sync(mailbox.pk)
    queued.clear()
    mailbox.refresh_from_db()
    return mailbox


def stored(mailbox) -> int:
    """Messages the mailbox's folders hold (each one once)."""
    return MailboxMessage.objects.filter(folder__mailbox=mailbox).count()


def messages_titled(mailbox, subject: str) -> int:
    return Message.objects.filter(account=mailbox.account, subject=subject).count()


def run_queued(queued: list[str]) -> None:
    while queued:
        mailbox_sync(queued.pop(0))


def channel_of(mailbox) -> PushChannel:
    return PushChannel.objects.get(mailbox=mailbox, provider=Provider.GMAIL, folder_role="")


def push(pubsub, capture, data: dict | None = None, **kwargs) -> int:
    with capture(execute=True):
        return pubsub.push(data or {"emailAddress": SUPPORT, "historyId": 1}, **kwargs)


# --- the watch -----------------------------------------------------------------------------


def test_a_connected_gmail_mailbox_is_watched_on_inbox_and_sent_at_once(
    db, admin, fake_google, fake_pubsub, queued, django_capture_on_commit_callbacks
):
    mailbox = connect(admin, fake_google, django_capture_on_commit_callbacks)

    watch = fake_google.watches[SUPPORT]
    assert watch["topic"] == fake_pubsub.topic
    assert watch["labels"] == ["INBOX", "SENT"] and watch["behavior"] == "include"
    channel = channel_of(mailbox)
    assert channel.status == PushStatus.ACTIVE and channel.last_error == ""
    assert channel.expires_at.timestamp() == pytest.approx(watch["expiration"] / 1000)
    assert mailbox.pushed_until == channel.expires_at and mailbox.push_error == ""
    assert mailbox_push_view(mailbox).text == "New mail arrives by Gmail push"
    # Pushed and recently synced: the poll leaves it to the pushes.
    mailbox_sync(mailbox.pk)
    assert mailbox.pk not in mailboxes_due()


def test_without_a_topic_the_mailbox_is_polled_and_its_page_says_push_is_not_set_up(
    db, admin, fake_google, queued, settings, django_capture_on_commit_callbacks
):
    settings.GMAIL_PUBSUB_TOPIC = ""
    mailbox = connect(admin, fake_google, django_capture_on_commit_callbacks)

    assert fake_google.calls_to("/watch") == [] and fake_google.watches == {}
    assert mailbox.pushed_until is None
    view = mailbox_push_view(mailbox)
    assert not view.on
    assert view.text.endswith(
        "push is off (Gmail push is not set up on this server; GMAIL_PUBSUB_TOPIC is unset)"
    )
    mailbox_sync(mailbox.pk)
    assert mailbox.pk in mailboxes_due()


def test_a_watch_older_than_a_day_is_made_again_and_its_expiry_moves(
    watched, fake_google, fake_pubsub
):
    channel = channel_of(watched)
    first_expiry = channel.expires_at
    calls = len(fake_google.calls_to("/watch"))

    # Within the day: nothing to do.
    keep_push_channel(watched.pk)
    assert len(fake_google.calls_to("/watch")) == calls

    # A day later (its expiry a day further for Gmail): watched again.
    PushChannel.objects.filter(pk=channel.pk).update(
        renewed_at=timezone.now() - timedelta(days=1, minutes=1)
    )
    fake_google.watch_lifetime += 3600
    assert keep_all_push_channels() == 1

    assert len(fake_google.calls_to("/watch")) == calls + 1
    channel.refresh_from_db()
    watched.refresh_from_db()
    assert channel.expires_at > first_expiry
    assert channel.renewed_at > timezone.now() - timedelta(minutes=1)
    assert watched.pushed_until == channel.expires_at


def test_a_changed_topic_is_watched_at_once(watched, fake_google, fake_pubsub, settings):
    settings.GMAIL_PUBSUB_TOPIC = fake_pubsub.topic = "projects/postkamer-test/topics/moved"

    keep_push_channel(watched.pk)

    assert fake_google.watches[SUPPORT]["topic"] == "projects/postkamer-test/topics/moved"
    assert channel_of(watched).external_id == "projects/postkamer-test/topics/moved"


def test_a_watch_that_fails_leaves_the_mailbox_polled_with_the_reason(
    watched, fake_google, fake_pubsub
):
    # The operator's topic does not let Gmail publish (the Publisher grant is missing).
    fake_google.topics_granted = set()
    PushChannel.objects.filter(mailbox=watched).update(
        renewed_at=timezone.now() - timedelta(days=2)
    )

    keep_push_channel(watched.pk)

    watched.refresh_from_db()
    channel = channel_of(watched)
    assert watched.pushed_until is None
    assert "not authorized" in watched.push_error and "403" in watched.push_error
    assert channel.status == PushStatus.FAILED and channel.last_error == watched.push_error
    assert watched.pk in mailboxes_due()
    assert "push is off" in mailbox_push_view(watched).text

    # Once the grant is there, the next round watches again.
    fake_google.topics_granted = None
    keep_push_channel(watched.pk)
    watched.refresh_from_db()
    assert channel_of(watched).status == PushStatus.ACTIVE and watched.push_error == ""
    assert watched.pushed_until is not None


def test_a_reconnected_mailbox_is_watched_again_at_once(
    watched, admin, fake_google, django_capture_on_commit_callbacks
):
    fake_google.revoke(SUPPORT)
    fake_google.watches.clear()
    PushChannel.objects.filter(mailbox=watched).update(status=PushStatus.FAILED)
    Mailbox.objects.filter(pk=watched.pk).update(pushed_until=None, push_error="revoked")

    with django_capture_on_commit_callbacks(execute=True):
        oauth_mailbox_connect(
            actor=admin,
            provider=Provider.GMAIL,
            grant=grant_for(fake_google, SUPPORT),
            kind="team",
            reconnect=watched,
        )

    watched.refresh_from_db()
    assert SUPPORT in fake_google.watches
    assert channel_of(watched).status == PushStatus.ACTIVE
    assert watched.pushed_until is not None and watched.push_error == ""


def test_disconnecting_stops_the_watch(watched, admin, fake_google):
    mailbox_disconnect(actor=admin, mailbox=watched)

    assert fake_google.calls_to("/stop") and SUPPORT not in fake_google.watches
    assert channel_of(watched).status == PushStatus.STOPPED


# --- the hook: a valid push ----------------------------------------------------------------


def test_a_push_syncs_the_mailbox_and_the_new_message_is_stored(
    watched, fake_google, hook, queued, django_capture_on_commit_callbacks
):
    before = stored(watched)

    with django_capture_on_commit_callbacks(execute=True):
        fake_google.deliver(SUPPORT, make_email(subject="Pushed in"))

    [pushed] = hook.pushes
    assert pushed.status == 204 and pushed.data["emailAddress"] == SUPPORT
    assert queued == [str(watched.pk)]
    assert channel_of(watched).last_push_at is not None
    run_queued(queued)
    assert stored(watched) == before + 1
    assert messages_titled(watched, "Pushed in") == 1


def test_a_replayed_push_is_acknowledged_and_changes_nothing(
    watched, fake_google, hook, queued, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        fake_google.deliver(SUPPORT, make_email(subject="Once"))
    replayed = hook.pushes[-1].message_id
    run_queued(queued)
    run_queued(queued)
    count = stored(watched)
    last_push = channel_of(watched).last_push_at

    assert push(hook, django_capture_on_commit_callbacks, message_id=replayed) == 204

    assert queued == [] and stored(watched) == count
    assert channel_of(watched).last_push_at == last_push


def test_a_late_or_duplicate_push_stores_no_message_twice(
    watched, fake_google, hook, queued, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        fake_google.deliver(SUPPORT, make_email(subject="Only once"))
    run_queued(queued)
    count = stored(watched)

    # Pub/Sub delivers the same change again under a new messageId, and a late one.
    assert push(hook, django_capture_on_commit_callbacks) == 204
    assert push(hook, django_capture_on_commit_callbacks, data={"emailAddress": SUPPORT}) == 204
    assert len(queued) == 2
    run_queued(queued)

    assert stored(watched) == count
    assert messages_titled(watched, "Only once") == 1


def test_a_push_for_an_address_nobody_connected_is_acknowledged_and_ignored(
    watched, hook, queued, django_capture_on_commit_callbacks
):
    status = push(
        hook, django_capture_on_commit_callbacks, data={"emailAddress": "nobody@gmail.com"}
    )

    assert status == 204 and queued == []
    assert channel_of(watched).last_push_at is None


def test_a_push_for_a_disconnected_mailbox_changes_nothing(
    watched, admin, hook, queued, django_capture_on_commit_callbacks
):
    mailbox_disconnect(actor=admin, mailbox=watched)

    assert push(hook, django_capture_on_commit_callbacks) == 204
    assert queued == []


# --- the hook: refused pushes ----------------------------------------------------------------


@pytest.fixture
def refuse(watched, hook, queued, client, django_capture_on_commit_callbacks):
    def check(status: int, code: str, *, authorization: str | None = None, **claims) -> dict:
        token = hook.token(**claims)
        with django_capture_on_commit_callbacks(execute=True):
            response = client.post(
                HOOK,
                data=hook.envelope({"emailAddress": SUPPORT, "historyId": 9})[1],
                content_type="application/json",
                headers={"Authorization": authorization or f"Bearer {token}"},
            )
        assert response.status_code == status, response.content
        body = response.json()
        assert body["code"] == code and body["detail"]
        assert queued == []
        assert channel_of(watched).last_push_at is None
        return body

    return check


def test_an_expired_token_is_refused(refuse):
    body = refuse(401, "not_authenticated", issued_at=time.time() - 7200, lifetime=3600)
    assert "expired" in body["detail"]


def test_a_token_for_another_audience_is_refused(refuse):
    body = refuse(401, "not_authenticated", audience="https://elsewhere.example.com/hooks/gmail/")
    assert "audience" in body["detail"]


def test_a_token_from_another_issuer_is_refused(refuse):
    refuse(401, "not_authenticated", issuer="https://evil.example.com")


def test_a_token_of_another_service_account_is_refused(refuse):
    refuse(403, "permission_denied", email="someone@other-project.iam.gserviceaccount.com")


def test_a_token_with_an_unverified_email_is_refused(refuse):
    refuse(403, "permission_denied", email_verified=False)


def test_a_token_signed_by_another_key_is_refused(refuse, hook):
    # Under Google's key id, and under one of its own.
    body = refuse(401, "not_authenticated", key=hook.forger, kid=hook.key.kid)
    assert "signature" in body["detail"]
    refuse(401, "not_authenticated", key=hook.forger)


def test_a_push_without_a_token_or_with_garbage_is_refused(refuse):
    refuse(401, "not_authenticated", authorization="Basic Zm9vOmJhcg==")
    refuse(401, "not_authenticated", authorization="Bearer not-a-jwt")


def test_without_a_service_account_configured_every_push_is_refused(refuse, settings):
    settings.GMAIL_PUSH_SERVICE_ACCOUNT = ""
    refuse(403, "permission_denied")


def test_the_hook_takes_only_bounded_posts(watched, hook, client):
    assert client.get(HOOK).status_code == 405
    big = client.post(
        HOOK,
        data=b"{" + b" " * (70 * 1024) + b"}",
        content_type="application/json",
        headers={"Authorization": f"Bearer {hook.token()}"},
    )
    assert big.status_code == 413 and big.json()["code"] == "too_large"
    unreadable = client.post(
        HOOK,
        data=b'{"message": {"data": "%%%"}}',
        content_type="application/json",
        headers={"Authorization": f"Bearer {hook.token()}"},
    )
    assert unreadable.status_code == 400


# --- Google's keys ---------------------------------------------------------------------------


def test_googles_keys_are_fetched_once_for_many_pushes(
    watched, fake_google, hook, queued, django_capture_on_commit_callbacks
):
    for _ in range(5):
        assert push(hook, django_capture_on_commit_callbacks) == 204
    # Forged tokens naming unknown keys do not make us fetch again and again.
    for _ in range(3):
        assert (
            push(hook, django_capture_on_commit_callbacks, token=hook.token(key=hook.forger)) == 401
        )

    assert len(fake_google.calls_to(CERTS_PATH)) == 1
    assert len(queued) == 5


def test_when_googles_keys_cannot_be_read_the_push_is_answered_503_for_a_retry(refuse, fake_google):
    fake_google.fail_next(500, CERTS_PATH)
    refuse(503, "unavailable")


def test_a_key_google_rotated_in_is_fetched_once(
    watched, fake_google, hook, queued, monkeypatch, django_capture_on_commit_callbacks
):
    monkeypatch.setattr(oidc, "REFETCH_MIN_SECONDS", 0)
    assert push(hook, django_capture_on_commit_callbacks) == 204
    # Google starts signing with a new key: it is fetched once, then cached too.
    hook.key = hook.forger
    assert push(hook, django_capture_on_commit_callbacks) == 204
    assert push(hook, django_capture_on_commit_callbacks) == 204

    assert len(fake_google.calls_to(CERTS_PATH)) == 2
    assert len(queued) == 3


# --- end to end ------------------------------------------------------------------------------


def google_env(fake_google, settings) -> dict[str, str]:
    """The worker's settings: Google is the fake, push goes to the fake's topic."""
    names = (
        "GOOGLE_CLIENT_ID",
        "GOOGLE_CLIENT_SECRET",
        "GOOGLE_AUTH_URI",
        "GOOGLE_TOKEN_URI",
        "GMAIL_API_ENDPOINT",
        "GMAIL_BATCH_URI",
        "OAUTH_CA_FILE",
        "PROVIDER_HTTP_TIMEOUT",
        "GMAIL_PUBSUB_TOPIC",
    )
    return {name: str(getattr(settings, name)) for name in names}


@pytest.mark.django_db(transaction=True)
def test_mail_gmail_pushes_is_in_the_inbox_within_seconds_end_to_end(
    engine, live_server, admin, fake_google, fake_pubsub, settings
):
    # Pub/Sub pushes over HTTP to the live server; a real worker watches and syncs.
    fake_pubsub.endpoint = live_server.url + HOOK
    settings.GMAIL_PUSH_AUDIENCE = fake_pubsub.endpoint
    worker = engine.worker(env=google_env(fake_google, settings))
    inbox = team_inbox(admin.account)
    mailbox = oauth_mailbox_connect(
        actor=admin,
        provider=Provider.GMAIL,
        grant=grant_for(fake_google, SUPPORT),
        kind="team",
        inbox=inbox,
        acknowledge_team_visibility=True,
    )
    wait_until(
        lambda: (
            PushChannel.objects.filter(mailbox=mailbox, status=PushStatus.ACTIVE).exists()
            and Mailbox.objects.filter(pk=mailbox.pk, sync_state="idle").exists()
        ),
        30,
        "the watch and the first sync",
    )
    assert fake_google.watches[SUPPORT]["topic"] == fake_pubsub.topic
    syncs = worker.count(r"Task inboxes.tasks.sync_mailbox\[[^\]]+\] succeeded")

    # No beat runs: only the push can bring this in.
    fake_google.deliver(SUPPORT, make_email(subject="Pushed end to end"))

    assert [p.status for p in fake_pubsub.pushes] == [204]
    wait_until(
        lambda: Conversation.objects.filter(inbox=inbox, subject="Pushed end to end").exists(),
        15,
        "the pushed message in the inbox",
    )
    wait_until(
        lambda: worker.count(r"Task inboxes.tasks.sync_mailbox\[[^\]]+\] succeeded") > syncs,
        10,
        "the pushed sync in the worker's log",
    )
    assert messages_titled(mailbox, "Pushed end to end") == 1
    assert PushChannel.objects.get(mailbox=mailbox).last_push_at is not None
