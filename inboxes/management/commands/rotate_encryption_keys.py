from django.core.management.base import BaseCommand

from inboxes.secrets_rotation import secrets_rotate


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored mailbox secret under the first key of FIELD_ENCRYPTION_KEYS. "
        "Run it after putting a new key first; remove the old key once it reports 0 left."
    )

    def handle(self, *args, **options):
        result = secrets_rotate()
        self.stdout.write(
            f"re-encrypted: {result.rotated}, already current: {result.current}, "
            f"unreadable: {len(result.unreadable)}"
        )
        for mailbox_id in result.unreadable:
            self.stderr.write(f"cannot decrypt the secrets of mailbox {mailbox_id}")
        if result.unreadable:
            raise SystemExit(1)
