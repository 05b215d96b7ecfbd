"""A mailbox's push, seen from the poll and from the mailbox page: while a push holds
(IDLE, a Gmail watch, Graph subscriptions) the poll leaves the mailbox to it, except for
a safety look every PUSH_SAFETY_POLL_SECONDS; when it lapses the poll takes over, and
the page says how new mail is noticed and, if push is off, why."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from inboxes.models import Mailbox
from inboxes.push.state import mailbox_push_view, push_holds, push_lapsed
from inboxes.sync import mailboxes_due, mailboxes_syncable

pytestmark = pytest.mark.django_db


def _synced(mailbox: Mailbox, ago: timedelta) -> Mailbox:
    Mailbox.objects.filter(pk=mailbox.pk).update(
        last_synced_at=timezone.now() - ago, sync_state="idle"
    )
    return Mailbox.objects.get(pk=mailbox.pk)


def test_the_poll_leaves_a_pushed_mailbox_to_its_push_until_the_safety_look(support, settings):
    _, mailbox = support
    settings.PUSH_SAFETY_POLL_SECONDS = 900
    _synced(mailbox, timedelta(seconds=30))
    assert mailbox.pk in mailboxes_due()  # no push: polled

    push_holds(mailbox.pk, timezone.now() + timedelta(minutes=5))
    assert mailbox.pk not in mailboxes_due()
    assert mailbox.pk in mailboxes_syncable()  # still synced, by its push

    _synced(mailbox, timedelta(seconds=901))
    assert mailbox.pk in mailboxes_due()  # the safety look


def test_a_lapsed_push_puts_the_mailbox_back_on_the_poll(support):
    _, mailbox = support
    _synced(mailbox, timedelta(seconds=30))
    Mailbox.objects.filter(pk=mailbox.pk).update(pushed_until=timezone.now() - timedelta(seconds=1))
    assert mailbox.pk in mailboxes_due()  # ran out without renewal
    push_holds(mailbox.pk, timezone.now() + timedelta(minutes=5))
    push_lapsed(mailbox.pk, "the server does not offer IDLE")
    assert mailbox.pk in mailboxes_due()


def test_the_mailbox_page_says_how_new_mail_is_noticed(client, admin, support, settings):
    _, mailbox = support
    settings.SYNC_POLL_SECONDS = 60
    client.force_login(admin)
    page = reverse("settings-mailbox", args=[mailbox.pk])

    push_holds(mailbox.pk, timezone.now() + timedelta(minutes=5))
    body = client.get(page).content.decode()
    assert "New mail arrives by IMAP IDLE" in body

    push_lapsed(mailbox.pk, "the server does not offer IDLE")
    body = client.get(page).content.decode()
    assert "New mail is checked every 60 s: push is off (the server does not offer IDLE)" in body
    view = mailbox_push_view(Mailbox.objects.get(pk=mailbox.pk))
    assert not view.on


def test_a_sync_asks_for_push_only_where_it_is_set_up_and_does_not_hold(settings):
    from inboxes.models import Provider
    from inboxes.push.renewal import push_missing

    settings.GRAPH_PUSH = True
    settings.GMAIL_PUBSUB_TOPIC = ""
    now = timezone.now()
    graph = Mailbox(provider=Provider.MICROSOFT)
    assert push_missing(graph)  # never made (a team mailbox attached after connecting)
    graph.pushed_until = now + timedelta(hours=1)
    assert not push_missing(graph)
    graph.pushed_until = now - timedelta(seconds=1)
    assert push_missing(graph)  # ran out
    graph.push_error = "Graph refused the subscription"
    assert not push_missing(graph)  # failed: the next renewal round, not a hot retry
    assert not push_missing(Mailbox(provider=Provider.GMAIL))  # no topic: polled
    settings.GMAIL_PUBSUB_TOPIC = "projects/p/topics/t"
    assert push_missing(Mailbox(provider=Provider.GMAIL))
    assert not push_missing(Mailbox(provider=Provider.IMAP))  # IDLE is the watchers' job


def test_a_personal_imap_mailbox_is_polled_for_its_sent_folder_while_idle_holds(support, admin):
    """IDLE watches the INBOX only; mail sent from another app lands in Sent."""
    _, mailbox = support
    Mailbox.objects.filter(pk=mailbox.pk).update(kind="personal", owner=admin)
    _synced(mailbox, timedelta(seconds=30))
    push_holds(mailbox.pk, timezone.now() + timedelta(minutes=5))
    assert mailbox.pk in mailboxes_due()


def test_a_poll_queues_a_mailbox_once_until_its_sync_starts(support, monkeypatch):
    """Workers that fall behind never see the same mailbox queued poll after poll."""
    from django.core.cache import cache

    from inboxes import tasks

    _, mailbox = support
    cache.clear()
    queued: list[str] = []
    monkeypatch.setattr(tasks.sync_mailbox, "delay", lambda mailbox_id: queued.append(mailbox_id))
    _synced(mailbox, timedelta(minutes=5))

    assert tasks.sync_due_mailboxes() == 1
    assert tasks.sync_due_mailboxes() == 0  # its sync has not started: not queued again
    assert queued == [str(mailbox.pk)]

    tasks.sync_mailbox.apply(args=[str(mailbox.pk)])  # the sync starts (and runs)
    _synced(mailbox, timedelta(minutes=5))
    assert tasks.sync_due_mailboxes() == 1
    assert queued == [str(mailbox.pk)] * 2
