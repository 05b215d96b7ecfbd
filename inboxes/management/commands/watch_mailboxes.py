import logging
import signal

from django.core.management.base import BaseCommand
from django.db import close_old_connections

from core.memory import malloc_tune
from inboxes.sync.watch import Watcher
from inboxes.sync.watch_leases import CLAIM_ROUND_SECONDS
from inboxes.tasks import sync_mailbox

log = logging.getLogger(__name__)


def sync_in_watcher(mailbox_id: str) -> None:
    """Run the sync a push triggered in this process, over the watcher's logged-in
    connection. Its errors are recorded on the mailbox by the sync; the poll retries."""
    from inboxes.sync import mailbox_sync

    try:
        mailbox_sync(mailbox_id)
    except Exception as exc:
        log.warning("mailbox %s: the pushed sync failed (%s); the poll retries", mailbox_id, exc)
    finally:
        close_old_connections()


class Command(BaseCommand):
    help = (
        "Hold an IMAP IDLE connection per mailbox and start a sync as soon as mail arrives. "
        "Run as many as wanted, on any machines: they share the mailboxes by leases in "
        "the database (inboxes/sync/watch_leases.py)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--refresh",
            type=float,
            default=CLAIM_ROUND_SECONDS,
            help="Seconds between lease rounds (claim new or freed mailboxes, give back "
            f"extras, renew the leases); more than {CLAIM_ROUND_SECONDS:g} lets a killed "
            "watcher's mailboxes wait longer than WATCH_LEASE_SECONDS.",
        )
        parser.add_argument(
            "--capacity",
            type=int,
            default=5000,
            help="Most mailboxes this process watches (it takes at most its fair share: "
            "the watchable mailboxes divided by the live watchers).",
        )
        parser.add_argument(
            "--name",
            default="",
            help="This watcher's name in the database (default host:pid:random); "
            "must be unique among running watchers.",
        )
        parser.add_argument(
            "--sync-concurrency",
            type=int,
            default=4,
            help="Most pushed syncs running (or queued) at once from this process.",
        )
        parser.add_argument(
            "--sync-on-workers",
            action="store_true",
            help="Queue the syncs that pushes trigger for the workers, instead of running "
            "them here over the watcher's logged-in IMAP connections (the default: no "
            "login per push). Polls and retries run on the workers either way.",
        )
        parser.add_argument(
            "--sync-here",
            action="store_true",
            help="The default; kept so that older command lines still work.",
        )

    def handle(
        self,
        *args,
        refresh: float,
        capacity: int,
        name: str,
        sync_concurrency: int,
        sync_on_workers: bool = False,
        **options,
    ):
        sync_here = not sync_on_workers
        on_change = (
            sync_in_watcher if sync_here else (lambda mailbox_id: sync_mailbox.delay(mailbox_id))
        )
        if sync_here:
            malloc_tune()  # this process runs syncs too (core/memory.py)
        watcher = Watcher(
            on_change=on_change,
            name=name or None,
            capacity=capacity,
            sync_concurrency=sync_concurrency,
        )
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: watcher.stop.set())
        self.stdout.write(f"watching mailboxes (IMAP IDLE) as {watcher.name}; Ctrl-C to stop")
        self.stdout.flush()
        watcher.run(claim_seconds=refresh)
