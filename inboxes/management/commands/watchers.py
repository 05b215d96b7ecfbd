"""``manage.py watchers``: the IMAP watchers running (on every machine), what each
holds, and the IMAP mailboxes no live watcher holds (the poll covers those)."""

from datetime import timedelta

from django.core.management.base import BaseCommand
from django.db.models import Q
from django.utils import timezone

from inboxes.models import Mailbox, MailboxStatus, Provider, SyncState, WatcherProcess
from inboxes.sync.watch_leases import hold_seconds


class Command(BaseCommand):
    help = "List the IMAP watcher processes and the mailboxes none of them holds."

    def handle(self, *args, **options):
        now = timezone.now()
        live_since = now - timedelta(seconds=hold_seconds())
        rows = WatcherProcess.objects.order_by("hostname", "name")
        if not rows:
            self.stdout.write("No watcher has registered (start manage.py watch_mailboxes).")
        for row in rows:
            state = "live" if row.heartbeat_at >= live_since else "gone (its leases run out)"
            held = Mailbox.objects.filter(watch_owner=row.name, watch_lease_until__gt=now).count()
            self.stdout.write(
                f"{row.name}  {state}  holds {held} of capacity {row.capacity}  "
                f"RSS {row.rss_bytes / 2**20:.0f} MiB  "
                f"heartbeat {(now - row.heartbeat_at).total_seconds():.0f} s ago"
            )
        imap = (
            Mailbox.objects.filter(provider=Provider.IMAP)
            .exclude(status__in=[MailboxStatus.DISCONNECTED, MailboxStatus.NEEDS_REAUTH])
            .exclude(sync_state=SyncState.STOPPED)
        )
        unheld = imap.filter(Q(watch_lease_until__isnull=True) | Q(watch_lease_until__lte=now))
        self.stdout.write(
            f"IMAP mailboxes: {imap.count()}, held by no live watcher: {unheld.count()} "
            "(polled every SYNC_POLL_SECONDS; a team mailbox without an inbox is not watched)"
        )
