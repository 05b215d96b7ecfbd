"""Microsoft Graph push: subscriptions, the ``/hooks/microsoft/`` endpoint, lifecycle events.

The real msal/requests Graph client talks to the fake (tests/support/fakes/microsoft.py,
subscriptions and pushes in microsoft_push.py), which does Graph's validation handshake
with, and posts its notifications to, the product served by ``live_server``. The hook
only queues work; ``queued`` records what it queued (in the web thread) and ``run``
does it here, so each test sees both halves. One test runs it all through a real
Celery worker.
"""

from __future__ import annotations

import hashlib
import threading
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest
import requests
from django.utils import timezone

from inboxes import tasks
from inboxes.models import (
    FolderRole,
    Mailbox,
    MailboxMessage,
    Provider,
    PushChannel,
    PushStatus,
)
from inboxes.oauth_connect import oauth_mailbox_connect
from inboxes.providers.graph.subscriptions import SUBSCRIPTION_MINUTES
from inboxes.push.microsoft import graph_subscriptions_end
from inboxes.push.renewal import keep_push_channel
from inboxes.services import mailbox_disconnect
from inboxes.sync import mailbox_sync, mailboxes_due
from tests.support.mail import make_email, team_inbox
from tests.support.mailservers import free_port

pytest.register_assert_rewrite("tests.support.workers")
from tests.support.workers import wait_until  # noqa: E402

if TYPE_CHECKING:
    from tests.support.fakes.microsoft import FakeMicrosoft

pytest_plugins = ["tests.support.fakes.microsoft", "tests.support.workers"]
pytestmark = [
    pytest.mark.django_db(transaction=True),  # live_server: the hook sees committed rows
    pytest.mark.usefixtures("loopback_only"),
    pytest.mark.filterwarnings("ignore:response_mode=.form_post. is recommended:UserWarning"),
]

SUPPORT = "support@acme.example.com"
REP = "ann@acme.example.com"


class Queue:
    """The tasks the product queued (from any thread), done here on request."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: list[tuple[str, str]] = []

    def add(self, name: str, mailbox_id: str) -> None:
        with self.lock:
            self.items.append((name, str(mailbox_id)))

    def take(self) -> list[tuple[str, str]]:
        with self.lock:
            items, self.items = self.items, []
        return items

    def names(self) -> list[str]:
        with self.lock:
            return [name for name, _ in self.items]


def run(queue: Queue) -> list[tuple[str, str]]:
    """Do what was queued, and what that queues in turn; everything done."""
    done = []
    while items := queue.take():
        for name, mailbox_id in items:
            if name == "sync":
                mailbox_sync(mailbox_id)
            else:
                keep_push_channel(mailbox_id)
            done.append((name, mailbox_id))
    return done


@pytest.fixture
def queued(monkeypatch) -> Queue:
    queue = Queue()
    monkeypatch.setattr(
        tasks.sync_mailbox, "delay", lambda mailbox_id: queue.add("sync", mailbox_id)
    )
    monkeypatch.setattr(
        tasks.keep_push_channel, "delay", lambda mailbox_id: queue.add("keep", mailbox_id)
    )
    return queue


@pytest.fixture
def fake(fake_microsoft, live_server, settings) -> FakeMicrosoft:
    settings.GRAPH_PUSH = True
    settings.PUBLIC_URL = live_server.url
    return fake_microsoft


@pytest.fixture
def support(fake, admin, queued) -> Mailbox:
    """support@ connected as the Support inbox's Microsoft 365 team email, subscribed."""
    fake.add_user(SUPPORT, "Acme Support")
    mailbox = oauth_mailbox_connect(
        actor=admin,
        provider=Provider.MICROSOFT,
        grant=fake.grant(SUPPORT),
        kind="team",
        inbox=team_inbox(admin.account),
        acknowledge_team_visibility=True,
    )
    run(queued)  # the first sync and the subscription the connect queued
    return mailbox


def hook(live_server) -> str:
    return f"{live_server.url}/hooks/microsoft/"


def channel(mailbox: Mailbox, role: str = FolderRole.INBOX) -> PushChannel:
    return PushChannel.objects.get(mailbox=mailbox, provider=Provider.MICROSOFT, folder_role=role)


def stored(mailbox: Mailbox) -> int:
    return MailboxMessage.objects.filter(folder__mailbox=mailbox).count()


def subscription_calls(fake: FakeMicrosoft, method: str) -> int:
    return len(fake.graph_requests(method, "/v1.0/subscriptions"))


def question(n: int = 1) -> bytes:
    return make_email(subject=f"Question {n}", to=SUPPORT)


# --- the endpoint -------------------------------------------------------------------------------------


def test_the_hook_answers_the_validation_handshake_with_the_token_as_plain_text(live_server):
    token = "Validation: Testing client application reachability <b>&amp; more</b>"

    answer = requests.post(hook(live_server), params={"validationToken": token}, timeout=10)

    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("text/plain")
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert answer.text == token


def test_the_hook_takes_only_posts_of_bounded_json_and_answers_errors_in_the_api_shape(
    live_server, queued
):
    url = hook(live_server)

    wrong_method = requests.get(url, timeout=10)
    bad_json = requests.post(url, data=b"{not json", timeout=10)
    wrong_shape = requests.post(url, json={"value": "nope"}, timeout=10)
    too_large = requests.post(url, data=b"x" * (1024 * 1024 + 1), timeout=10)

    assert wrong_method.status_code == 405
    assert wrong_method.json()["code"] == "method_not_allowed"
    assert bad_json.status_code == 400 and bad_json.json()["code"] == "invalid"
    assert wrong_shape.status_code == 400 and wrong_shape.json()["code"] == "invalid"
    assert too_large.status_code == 413 and too_large.json()["code"] == "too_large"
    assert queued.take() == []


# --- subscribing ------------------------------------------------------------------------------------------


def test_connecting_subscribes_the_inbox_after_the_handshake_and_keeps_only_the_secrets_hash(
    fake, support
):
    subscription = fake.push.of(SUPPORT, "inbox")
    assert subscription is not None
    assert subscription.resource == f"users/{SUPPORT}/mailFolders('inbox')/messages"
    assert subscription.notification_url == subscription.lifecycle_url
    assert subscription.notification_url.endswith("/hooks/microsoft/")
    assert subscription.change_types == {"created", "updated"}
    assert [status for _url, status in fake.push.validations] == [200]
    minutes = (subscription.expires - timezone.now()).total_seconds() / 60
    assert SUBSCRIPTION_MINUTES - 5 < minutes <= 10_080

    row = channel(support)
    assert row.status == PushStatus.ACTIVE
    assert row.external_id == subscription.id
    assert row.client_state_hash == hashlib.sha256(subscription.client_state.encode()).hexdigest()
    stored_values = [
        str(value) for value in PushChannel.objects.filter(pk=row.pk).values().get().values()
    ]
    assert not any(subscription.client_state in value for value in stored_values)
    support.refresh_from_db()
    assert support.pushed_until == row.expires_at
    assert support.push_error == ""
    assert support.pk not in mailboxes_due()  # just synced, and pushed: the poll waits


def test_a_personal_email_subscribes_its_inbox_and_sent_items_each_with_its_own_secret(
    fake, admin, queued
):
    fake.add_user(REP, "Ann Smith")
    mailbox = oauth_mailbox_connect(
        actor=admin, provider=Provider.MICROSOFT, grant=fake.grant(REP), kind="personal"
    )
    run(queued)

    inbox, sent = fake.push.of(REP, "inbox"), fake.push.of(REP, "sentitems")
    assert inbox and sent
    assert inbox.resource == "me/mailFolders('inbox')/messages"
    assert sent.resource == "me/mailFolders('sentitems')/messages"
    assert inbox.client_state != sent.client_state
    assert {c.folder_role: c.external_id for c in mailbox.push_channels.all()} == {
        "inbox": inbox.id,
        "sent": sent.id,
    }


def test_without_graph_push_a_microsoft_mailbox_is_polled_and_nothing_is_subscribed(
    fake, admin, queued, settings
):
    settings.GRAPH_PUSH = False
    fake.add_user(SUPPORT)
    mailbox = oauth_mailbox_connect(
        actor=admin,
        provider=Provider.MICROSOFT,
        grant=fake.grant(SUPPORT),
        kind="team",
        inbox=team_inbox(admin.account),
        acknowledge_team_visibility=True,
    )
    assert queued.names() == ["sync"]
    keep_push_channel(mailbox.pk)

    assert subscription_calls(fake, "POST") == 0
    assert not PushChannel.objects.filter(mailbox=mailbox).exists()
    mailbox.refresh_from_db()
    assert mailbox.pushed_until is None


# --- pushes -------------------------------------------------------------------------------------------------


def test_delivered_mail_is_pushed_then_synced_and_stored(fake, support, queued):
    before = stored(support)

    fake.deliver(SUPPORT, question())
    pushes = fake.push.wait()

    assert [(p.kind, p.status) for p in pushes] == [("created", 202)]
    assert queued.names() == ["sync"]  # queued by the hook, not done in the request
    assert stored(support) == before
    run(queued)
    assert stored(support) == before + 1
    assert channel(support).last_push_at is not None


def test_a_notification_with_the_wrong_client_state_changes_nothing(
    fake, support, queued, live_server
):
    subscription = fake.push.of(SUPPORT)
    forged = {
        "value": [
            {
                "subscriptionId": subscription.id,
                "changeType": "created",
                "clientState": "guessed",
                "resource": "Users/x/Messages/y",
            }
        ]
    }

    answer = requests.post(hook(live_server), json=forged, timeout=10)

    assert answer.status_code == 202  # nothing to tell a forger
    assert queued.take() == []
    assert channel(support).last_push_at is None


def test_a_notification_for_an_unknown_subscription_changes_nothing(
    fake, support, queued, live_server
):
    subscription = fake.push.of(SUPPORT)
    for item in (
        {"subscriptionId": "not-ours", "clientState": subscription.client_state},
        {"clientState": subscription.client_state, "lifecycleEvent": "subscriptionRemoved"},
        "not an object",
    ):
        answer = requests.post(hook(live_server), json={"value": [item]}, timeout=10)
        assert answer.status_code == 202

    assert queued.take() == []
    assert channel(support).status == PushStatus.ACTIVE


def test_a_duplicate_notification_stores_no_duplicate_message(fake, support, queued, live_server):
    before = stored(support)
    fake.deliver(SUPPORT, question())
    (push,) = fake.push.wait()
    run(queued)

    again = requests.post(hook(live_server), json=push.payload, timeout=10)  # a late duplicate

    assert again.status_code == 202
    assert [name for name, _ in run(queued)] == ["sync"]
    assert stored(support) == before + 1


# --- lifecycle notifications -------------------------------------------------------------------------


def test_reauthorization_required_renews_the_subscription(fake, support, queued):
    row = channel(support)
    patches = subscription_calls(fake, "PATCH")

    fake.push.lifecycle(row.external_id, "reauthorizationRequired")
    fake.push.wait()

    assert queued.names() == ["keep"]
    run(queued)
    assert subscription_calls(fake, "PATCH") == patches + 1
    renewed = channel(support)
    assert renewed.external_id == row.external_id
    assert renewed.status == PushStatus.ACTIVE
    assert renewed.expires_at > timezone.now() + timedelta(days=6)
    support.refresh_from_db()
    assert support.pushed_until == renewed.expires_at


def test_subscription_removed_subscribes_again_and_syncs_what_came_meanwhile(fake, support, queued):
    old = channel(support).external_id
    before = stored(support)

    fake.push.remove(old)
    fake.push.wait()
    fake.deliver(SUPPORT, question(2))  # no subscription: nobody is told

    assert channel(support).status == PushStatus.STOPPED
    assert sorted(queued.names()) == ["keep", "sync"]
    run(queued)
    row = channel(support)
    assert row.status == PushStatus.ACTIVE
    assert row.external_id != old
    assert fake.push.of(SUPPORT).id == row.external_id
    assert stored(support) == before + 1


def test_missed_notifications_start_a_sync_that_catches_up(fake, support, queued):
    before = stored(support)
    fake.push.silent = True
    fake.deliver(SUPPORT, question(3))
    fake.push.silent = False

    fake.push.lifecycle(channel(support).external_id, "missed")
    fake.push.wait()

    assert queued.names() == ["sync"]
    run(queued)
    assert stored(support) == before + 1


# --- renewal -----------------------------------------------------------------------------------------------


def test_a_subscription_is_renewed_within_a_day_of_expiring_and_left_alone_before(fake, support):
    row = channel(support)
    patches = subscription_calls(fake, "PATCH")
    PushChannel.objects.filter(pk=row.pk).update(expires_at=timezone.now() + timedelta(days=3))

    keep_push_channel(support.pk)
    assert subscription_calls(fake, "PATCH") == patches

    PushChannel.objects.filter(pk=row.pk).update(expires_at=timezone.now() + timedelta(hours=20))
    keep_push_channel(support.pk)

    assert subscription_calls(fake, "PATCH") == patches + 1
    renewed = channel(support)
    assert renewed.external_id == row.external_id
    assert renewed.expires_at > timezone.now() + timedelta(days=6)
    assert fake.push.of(SUPPORT).expires > timezone.now() + timedelta(days=6)


def test_a_renewal_graph_answers_404_to_makes_a_new_subscription(fake, support):
    row = channel(support)
    fake.push.expire(row.external_id)
    PushChannel.objects.filter(pk=row.pk).update(expires_at=timezone.now() + timedelta(hours=1))

    keep_push_channel(support.pk)

    renewed = channel(support)
    assert renewed.external_id != row.external_id
    assert renewed.status == PushStatus.ACTIVE
    assert fake.push.of(SUPPORT).id == renewed.external_id
    support.refresh_from_db()
    assert support.pushed_until == renewed.expires_at


def test_a_subscription_graph_refuses_leaves_the_mailbox_polled_with_the_reason(
    fake, support, settings
):
    row = channel(support)
    fake.push.expire(row.external_id)
    PushChannel.objects.filter(pk=row.pk).update(expires_at=timezone.now() + timedelta(hours=1))
    # Graph cannot reach our endpoint: its handshake fails and it refuses the subscription.
    settings.PUBLIC_URL = f"http://127.0.0.1:{free_port()}"

    keep_push_channel(support.pk)

    failed = channel(support)
    assert failed.status == PushStatus.FAILED
    assert "ValidationError" in failed.last_error
    support.refresh_from_db()
    assert support.pushed_until is None
    assert "ValidationError" in support.push_error
    assert support.pk in mailboxes_due()
    assert fake.push.of(SUPPORT) is None


# --- a real worker ---------------------------------------------------------------------------------------


def test_end_to_end_a_new_mailbox_is_subscribed_within_seconds_and_pushed_mail_is_stored(
    fake_microsoft, live_server, settings, admin, private_engine
):
    fake = fake_microsoft
    settings.GRAPH_PUSH = True
    settings.PUBLIC_URL = live_server.url
    worker = private_engine.worker(
        env={
            "GRAPH_PUSH": "true",
            "PUBLIC_URL": live_server.url,
            "MICROSOFT_CLIENT_ID": fake.client_id,
            "MICROSOFT_CLIENT_SECRET": fake.client_secret,
            "MICROSOFT_AUTHORITY": fake.authority,
            "GRAPH_API_ENDPOINT": fake.graph_endpoint,
            "OAUTH_CA_FILE": fake.ca_path,
            "SYNC_POLL_SECONDS": "3600",
        }
    )
    fake.add_user(SUPPORT, "Acme Support")
    mailbox = oauth_mailbox_connect(
        actor=admin,
        provider=Provider.MICROSOFT,
        grant=fake.grant(SUPPORT),
        kind="team",
        inbox=team_inbox(admin.account),
        acknowledge_team_visibility=True,
    )

    wait_until(lambda: fake.push.of(SUPPORT), 30, "the worker's subscription")
    wait_until(lambda: Mailbox.objects.get(pk=mailbox.pk).pushed_until, 30, "push to hold")
    wait_until(lambda: Mailbox.objects.get(pk=mailbox.pk).last_synced_at, 30, "the first sync")
    fake.deliver(SUPPORT, question(7))

    wait_until(lambda: stored(mailbox) == 1, 30, "the pushed message to be stored")
    assert [(p.kind, p.status) for p in fake.push.wait()] == [("created", 202)]
    assert worker.alive()


def test_ending_a_mailboxs_subscriptions_deletes_them_at_graph_and_forgets_them(fake, support):
    assert fake.push.of(SUPPORT) is not None

    ended = graph_subscriptions_end(support)

    assert ended == 1
    assert fake.push.of(SUPPORT) is None
    assert not PushChannel.objects.filter(mailbox=support).exists()


def test_disconnecting_ends_the_subscriptions_at_graph(fake, support, admin):
    assert fake.push.of(SUPPORT) is not None
    mailbox_disconnect(actor=admin, mailbox=support)
    assert fake.push.of(SUPPORT) is None
    assert not PushChannel.objects.filter(mailbox=support).exists()


def test_a_disconnected_mailboxs_notifications_are_ignored(fake, support, queued, admin):
    fake.fail_next(503, match="/subscriptions/", times=5)  # the delete does not get through
    mailbox_disconnect(actor=admin, mailbox=support)
    queued.take()

    fake.deliver(SUPPORT, question(9))  # its subscription lives on at Microsoft
    (push,) = fake.push.wait()

    assert push.status == 202
    assert queued.take() == []
