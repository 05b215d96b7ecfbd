from django.core.management.base import BaseCommand

from inboxes.search_index import messages_index_pending, messages_unindexed, search_indexed


class Command(BaseCommand):
    help = (
        "Fill the search column of every stored message not indexed yet, now (PostgreSQL). "
        "The workers do it on their own in the background; after an upgrade of a big "
        "install this does the whole backlog at once, showing its progress."
    )

    def handle(self, *args, **options):
        if not search_indexed():
            self.stdout.write("nothing to index: this database (SQLite) searches with a scan")
            return
        total = messages_unindexed()
        done = 0
        while True:
            indexed, more = messages_index_pending(seconds=5)
            done += indexed
            self.stdout.write(f"indexed {done:,} of {total:,} messages")
            if not more:
                break
        self.stdout.write(f"done: {messages_unindexed():,} left")
