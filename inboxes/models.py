from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from core.models import BaseModel


class MailboxKind(models.TextChoices):
    PERSONAL = "personal"
    TEAM = "team"


class Provider(models.TextChoices):
    IMAP = "imap", "IMAP/SMTP"
    GMAIL = "gmail", "Gmail"
    MICROSOFT = "microsoft", "Microsoft 365"


class Security(models.TextChoices):
    SSL = "ssl", "SSL/TLS"
    STARTTLS = "starttls", "STARTTLS"
    NONE = "none", "None (unencrypted)"


class MailboxStatus(models.TextChoices):
    CONNECTED = "connected"
    SYNCING = "syncing"
    ERROR = "error"
    NEEDS_REAUTH = "needs_reauth"
    DISCONNECTED = "disconnected"


class SyncState(models.TextChoices):
    PENDING = "pending"
    INITIAL = "initial"
    IDLE = "idle"
    RUNNING = "running"
    ERROR = "error"
    STOPPED = "stopped"


class Mailbox(BaseModel):
    """One connected address. Disconnecting keeps the row (and its history) and
    frees the address; the unique constraint below only counts connected rows.
    """

    account = models.ForeignKey(
        "accounts.Account", on_delete=models.CASCADE, related_name="mailboxes"
    )
    address = models.CharField(max_length=320, help_text="As the user typed it.")
    canonical_address = models.CharField(max_length=320, db_index=True)
    kind = models.CharField(max_length=10, choices=MailboxKind.choices)
    # Personal mailboxes belong to exactly one user (R1); team mailboxes to nobody.
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="mailboxes",
    )
    connected_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    provider = models.CharField(max_length=20, choices=Provider.choices, default=Provider.IMAP)

    imap_host = models.CharField(max_length=255, blank=True)
    imap_port = models.PositiveIntegerField(null=True, blank=True)
    imap_security = models.CharField(max_length=10, choices=Security.choices, blank=True)
    imap_username = models.CharField(max_length=320, blank=True)
    smtp_host = models.CharField(max_length=255, blank=True)
    smtp_port = models.PositiveIntegerField(null=True, blank=True)
    smtp_security = models.CharField(max_length=10, choices=Security.choices, blank=True)
    smtp_username = models.CharField(max_length=320, blank=True)
    # Passwords and tokens, encrypted with inboxes.crypto (AES-GCM bound to this row).
    secrets_ciphertext = models.BinaryField(null=True, blank=True, editable=False)

    status = models.CharField(
        max_length=20, choices=MailboxStatus.choices, default=MailboxStatus.CONNECTED
    )
    last_error = models.TextField(blank=True)
    team_visibility_acknowledged_at = models.DateTimeField(null=True, blank=True)
    disconnected_at = models.DateTimeField(null=True, blank=True)

    sync_state = models.CharField(
        max_length=20, choices=SyncState.choices, default=SyncState.PENDING
    )
    sync_done = models.PositiveIntegerField(default=0)
    sync_total = models.PositiveIntegerField(null=True, blank=True)
    last_synced_at = models.DateTimeField(null=True, blank=True)
    sync_last_error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # R1 and R2: one connected mailbox per canonical address in an account,
            # whatever its kind or owner. Backs the friendly check in rules.py so
            # two simultaneous connects can never both win.
            models.UniqueConstraint(
                fields=["account", "canonical_address"],
                condition=~Q(status="disconnected"),
                name="unique_connected_address_per_account",
            ),
            models.CheckConstraint(
                condition=(Q(kind="personal") & Q(owner__isnull=False))
                | (Q(kind="team") & Q(owner__isnull=True)),
                name="personal_has_owner_team_has_none",
            ),
        ]

    def __str__(self) -> str:
        return self.address

    @property
    def is_connected(self) -> bool:
        return self.status != MailboxStatus.DISCONNECTED
