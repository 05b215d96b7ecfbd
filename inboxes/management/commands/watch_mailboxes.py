import signal

from django.core.management.base import BaseCommand

from inboxes.tasks import sync_mailbox
from inboxes.watch import Watcher


class Command(BaseCommand):
    help = "Hold an IMAP IDLE connection per mailbox and start a sync as soon as mail arrives."

    def add_arguments(self, parser):
        parser.add_argument(
            "--refresh",
            type=float,
            default=15,
            help="Seconds between looks for new or removed mailboxes.",
        )

    def handle(self, *args, refresh, **options):
        watcher = Watcher(on_change=lambda mailbox_id: sync_mailbox.delay(mailbox_id))
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: watcher.stop.set())
        self.stdout.write("watching mailboxes (IMAP IDLE); Ctrl-C to stop")
        watcher.run(refresh_seconds=refresh)
