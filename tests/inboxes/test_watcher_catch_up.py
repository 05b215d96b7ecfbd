"""A watcher that starts watching a mailbox (at start-up, or taking it over from one
that died) syncs it first only when the INBOX changed since its stored cursor: a
thousand mailboxes taken over at once must not queue a thousand empty syncs in front
of the pushes that bring real mail."""

from __future__ import annotations

import threading
import time

import pytest

from conversations.models import Conversation
from inboxes.sync import mailbox_sync, watch
from tests.support.mail import make_email

pytestmark = pytest.mark.django_db(transaction=True)


def _watch(mailbox_id, on_change):
    stop = threading.Event()
    thread = threading.Thread(
        target=watch.watch_mailbox, args=(mailbox_id, on_change, stop), name="watcher"
    )
    thread.start()
    return stop, thread


def _until(predicate, seconds=15.0):
    deadline = time.monotonic() + seconds
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)
    return predicate()


def test_a_mailbox_whose_cursor_covers_its_inbox_is_watched_without_a_catch_up_sync(
    support, dovecot, mail_user
):
    inbox, mailbox = support
    dovecot.deliver(mail_user[0], make_email(subject="Before"))
    assert mailbox_sync(mailbox.pk).imported == 1  # the cursor covers the INBOX now
    syncs: list[int] = []
    stop, thread = _watch(mailbox.pk, lambda pk: syncs.append(mailbox_sync(pk).imported))
    try:
        time.sleep(1.5)  # time enough to log in, look and (before this change) sync
        assert syncs == []
        dovecot.deliver(mail_user[0], make_email(subject="Pushed"))
        assert _until(lambda: sum(syncs) == 1)  # the push still brings new mail
    finally:
        stop.set()
        thread.join(10)
    assert Conversation.objects.filter(inbox=inbox, subject="Pushed").exists()
    assert syncs[0] == 1  # the first sync was the push's, not an empty catch-up


def test_mail_that_came_while_nobody_watched_is_caught_up_at_once(support, dovecot, mail_user):
    inbox, mailbox = support
    assert mailbox_sync(mailbox.pk).imported == 0
    dovecot.deliver(mail_user[0], make_email(subject="While nobody watched"))
    syncs: list[int] = []
    stop, thread = _watch(mailbox.pk, lambda pk: syncs.append(mailbox_sync(pk).imported))
    try:
        assert _until(lambda: sum(syncs) == 1)
    finally:
        stop.set()
        thread.join(10)
    assert Conversation.objects.filter(inbox=inbox, subject="While nobody watched").exists()
