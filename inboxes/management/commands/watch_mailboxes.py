import logging
import signal

from django.core.management.base import BaseCommand
from django.db import close_old_connections

from core.memory import malloc_tune
from inboxes.sync.watch import Watcher
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
    help = "Hold an IMAP IDLE connection per mailbox and start a sync as soon as mail arrives."

    def add_arguments(self, parser):
        parser.add_argument(
            "--refresh",
            type=float,
            default=15,
            help="Seconds between looks for new or removed mailboxes.",
        )
        parser.add_argument(
            "--sync-here",
            action="store_true",
            help="Run the syncs that pushes trigger in this process, over the watcher's "
            "logged-in IMAP connections (no login per push), instead of queueing them "
            "for the workers. Polls and retries still run on the workers.",
        )

    def handle(self, *args, refresh, sync_here: bool = False, **options):
        if sync_here:
            malloc_tune()  # this process runs syncs too (core/memory.py)
            watcher = Watcher(on_change=sync_in_watcher)
        else:
            watcher = Watcher(on_change=lambda mailbox_id: sync_mailbox.delay(mailbox_id))
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: watcher.stop.set())
        self.stdout.write("watching mailboxes (IMAP IDLE); Ctrl-C to stop")
        watcher.run(refresh_seconds=refresh)
