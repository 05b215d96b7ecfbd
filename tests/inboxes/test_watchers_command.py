"""``manage.py watchers`` shows the operator what each watcher holds and what none does."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from inboxes.models import Mailbox, WatcherProcess

pytestmark = pytest.mark.django_db


def test_the_watchers_command_lists_live_and_gone_watchers_and_unheld_mailboxes(support):
    _, mailbox = support
    now = timezone.now()
    WatcherProcess.objects.create(name="a:1:x", hostname="a", pid=1, heartbeat_at=now)
    WatcherProcess.objects.create(
        name="b:2:y", hostname="b", pid=2, heartbeat_at=now - timedelta(hours=1)
    )
    out = StringIO()
    call_command("watchers", stdout=out)
    text = out.getvalue()
    assert "a:1:x  live  holds 0" in text
    assert "b:2:y  gone" in text
    assert "IMAP mailboxes: 1, held by no live watcher: 1" in text

    Mailbox.objects.filter(pk=mailbox.pk).update(
        watch_owner="a:1:x", watch_lease_until=now + timedelta(seconds=30)
    )
    out = StringIO()
    call_command("watchers", stdout=out)
    assert "a:1:x  live  holds 1" in out.getvalue()
    assert "held by no live watcher: 0" in out.getvalue()
