"""Several ``manage.py watch_mailboxes`` processes on one database and a real Dovecot:
each mailbox watched by exactly one, a killed watcher's mailboxes taken over within
the lease time (and mail that came meanwhile synced), a new mailbox watched within
seconds, everything given back on a clean stop.

The watchers run the pushed syncs themselves (their default), so no worker is needed.
"""

from __future__ import annotations

import os
import signal
import uuid

import pytest
from django.utils import timezone

from conversations.models import Conversation
from inboxes.models import Mailbox, WatcherProcess
from tests.support.mail import connect_imap_mailbox, make_email, team_inbox

pytest.register_assert_rewrite("tests.support.workers")
from tests.support.workers import PYTHON, Process, wait_until  # noqa: E402

pytest_plugins = ["tests.support.workers"]
pytestmark = pytest.mark.django_db(transaction=True)

LEASE_SECONDS = 8
# How long a push may take: IDLE reports at once while Dovecot has inotify; when the
# machine's inotify instances for its mail user run out (fs.inotify.max_user_instances,
# 128, shared by every Dovecot on a machine; one per imap process), it checks every
# 30 s instead. The test waits that out rather than fail on a busy shared machine.
PUSH_SECONDS = 40


def start_watcher(engine, name: str, *extra: str) -> Process:
    argv = [PYTHON, "manage.py", "watch_mailboxes", "--refresh", "0.3", "--name"]
    env = engine.env(
        {"WATCH_LEASE_SECONDS": str(LEASE_SECONDS), "SYNC_LEASE_SECONDS": "5", "LOG_LEVEL": "INFO"}
    )
    process = Process(name, [*argv, name, *extra], env, engine.root / f"{name}.log")
    engine.processes.append(process)
    process.start()
    return process


def connect(admin, dovecot, smtp_server, n: int):
    user = (f"watched{n}-{uuid.uuid4().hex[:6]}@acme.example.com", "secret")
    dovecot.add_user(*user)
    smtp_server.add_user(*user)
    inbox = team_inbox(admin.account, name=f"Team {n}")
    mailbox = connect_imap_mailbox(
        actor=admin,
        dovecot=dovecot,
        smtp_server=smtp_server,
        user=user,
        address=f"team{n}@acme.example.com",
        inbox=inbox,
    )
    return user, inbox, mailbox


def owners() -> dict[str, str]:
    now = timezone.now()
    return {
        str(pk): owner
        for pk, owner, until, pushed in Mailbox.objects.values_list(
            "pk", "watch_owner", "watch_lease_until", "pushed_until"
        )
        if owner and until and until > now and pushed and pushed > now
    }


def test_watchers_share_the_mailboxes_and_take_over_from_a_killed_one(
    engine, admin, dovecot, smtp_server
):
    connected = [connect(admin, dovecot, smtp_server, n) for n in range(4)]
    a = start_watcher(engine, f"watch-a-{uuid.uuid4().hex[:6]}")
    b = start_watcher(engine, f"watch-b-{uuid.uuid4().hex[:6]}")

    # each mailbox held (and IDLEd on) by exactly one, two each
    held = wait_until(
        lambda: (
            (o := owners())
            and len(o) == 4
            and sorted(list(o.values()).count(w.name) for w in (a, b)) == [2, 2]
            and o
        ),
        30,
        "both watchers holding two mailboxes each, IDLE live",
    )
    assert set(held.values()) == {a.name, b.name}
    assert WatcherProcess.objects.filter(name__in=[a.name, b.name]).count() == 2

    # a push reaches the mailbox's watcher and its sync brings the message in
    user, inbox, _ = connected[0]
    dovecot.deliver(user[0], make_email(subject="Pushed while shared"))
    wait_until(
        lambda: Conversation.objects.filter(inbox=inbox, subject="Pushed while shared").exists(),
        PUSH_SECONDS,
        "the pushed message",
    )

    # kill -9 one: its mailboxes move to the other within the lease time, and mail
    # delivered meanwhile is synced (also when it died in the middle of a sync: the
    # survivor ends the dead one's sync leases)
    os.kill(a.pid, signal.SIGKILL)
    a.popen.wait(5)
    orphan = next(c for c in connected if held[str(c[2].pk)] == a.name)
    dovecot.deliver(orphan[0][0], make_email(subject="While nobody watched"))
    wait_until(
        lambda: set(owners().values()) == {b.name} and len(owners()) == 4,
        LEASE_SECONDS + 10,
        "the survivor holding every mailbox",
    )
    wait_until(
        lambda: Conversation.objects.filter(
            inbox=orphan[1], subject="While nobody watched"
        ).exists(),
        10,
        "the message delivered while the mailbox had no watcher",
    )

    # a new mailbox is watched within seconds
    user5, inbox5, mailbox5 = connect(admin, dovecot, smtp_server, 5)
    wait_until(lambda: owners().get(str(mailbox5.pk)) == b.name, 10, "the new mailbox watched")
    dovecot.deliver(user5[0], make_email(subject="To the new one"))
    wait_until(
        lambda: Conversation.objects.filter(inbox=inbox5, subject="To the new one").exists(),
        PUSH_SECONDS,
        "mail to the new mailbox",
    )

    # a clean stop gives everything back and removes its row
    b.stop(timeout=30)
    assert b.popen.returncode == 0, b.describe()
    assert "did not stop" not in b.log(), b.describe()  # IDLE threads woken, not waited out
    print(b.matches(r"stopped in [\d.]+ s"))
    assert not Mailbox.objects.exclude(watch_owner="").exists()
    assert not Mailbox.objects.filter(pushed_until__isnull=False).exists()
    assert not WatcherProcess.objects.filter(name=b.name).exists()


def test_a_watcher_renews_idle_on_the_setting_and_marks_a_failing_login_polled(
    engine, admin, dovecot, smtp_server
):
    user, inbox, mailbox = connect(admin, dovecot, smtp_server, 1)
    name = f"watch-r-{uuid.uuid4().hex[:6]}"
    argv = [PYTHON, "manage.py", "watch_mailboxes", "--refresh", "0.3", "--name", name]
    env = engine.env(
        {"WATCH_LEASE_SECONDS": str(LEASE_SECONDS), "IDLE_RENEW_SECONDS": "1", "LOG_LEVEL": "DEBUG"}
    )
    watcher = Process(name, argv, env, engine.root / f"{name}.log")
    engine.processes.append(watcher)
    watcher.start()
    # IDLE issued again and again on one login (IDLE_RENEW_SECONDS, not a 29-minute wait)
    watcher.wait_for_log(r"> b'\w+ IDLE'", count=3, timeout=30)
    assert watcher.count(r"> b'\w+ LOGIN") == 1

    # a changed password: the next login fails, push is off and the page says why
    dovecot.add_user(user[0], "changed-by-the-owner")
    os.kill(watcher.pid, signal.SIGKILL)  # its lease runs out; a new watcher logs in
    watcher.popen.wait(5)
    again = Process(name + "-2", [*argv[:-1], name + "-2"], env, engine.root / "again.log")
    engine.processes.append(again)
    again.start()
    wait_until(
        lambda: (
            Mailbox.objects.filter(pk=mailbox.pk, push_error__contains="login failed")
            .exclude(pushed_until__gt=timezone.now())
            .exists()
        ),
        LEASE_SECONDS + 15,
        "push marked off with the login failure",
    )
