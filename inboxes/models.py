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


class AuthMethod(models.TextChoices):
    PASSWORD = "password", "Password"
    XOAUTH2 = "xoauth2", "OAuth 2.0 (XOAUTH2)"


class MailboxStatus(models.TextChoices):
    CONNECTED = "connected"
    SYNCING = "syncing"
    ERROR = "error"
    NEEDS_REAUTH = "needs_reauth"
    DISCONNECTED = "disconnected"


class SyncState(models.TextChoices):
    PENDING = "pending"
    INITIAL = "initial"
    # Older mail being imported after the import window was made larger.
    HISTORY = "history", "Importing older mail"
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
    # How IMAP and SMTP log in: a password, or XOAUTH2 with tokens from the
    # sign-in provider named in ``oauth_provider`` (kept in the encrypted secrets).
    auth_method = models.CharField(
        max_length=10, choices=AuthMethod.choices, default=AuthMethod.PASSWORD
    )
    oauth_provider = models.CharField(max_length=20, choices=Provider.choices, blank=True)
    # The provider's id for the account (Gmail profile address, Graph user id).
    provider_user_id = models.CharField(max_length=255, blank=True)
    # Passwords and tokens, encrypted with inboxes.credentials (AES-GCM bound to this row).
    secrets_ciphertext = models.BinaryField(null=True, blank=True, editable=False)

    status = models.CharField(
        max_length=20, choices=MailboxStatus.choices, default=MailboxStatus.CONNECTED
    )
    last_error = models.TextField(blank=True)
    team_visibility_acknowledged_at = models.DateTimeField(null=True, blank=True)
    disconnected_at = models.DateTimeField(null=True, blank=True)

    # The import window: the last this many days of history, counted back from when
    # it was chosen (None: all of it; 0: only new mail); chosen on connect and only
    # ever made larger later (inboxes/history.py). Each folder's ``backfill_from``
    # is where its imported window starts.
    backfill_days = models.PositiveIntegerField(null=True, blank=True, default=30)
    # A lease, not a lock held by a connection: a worker that dies simply lets
    # it expire, and any worker on any machine can take over (inboxes/sync/lease.py).
    sync_lease_token = models.CharField(max_length=64, blank=True)
    sync_lease_until = models.DateTimeField(null=True, blank=True)
    # Set by every sync before it tries the lease; the holder looks at it after
    # letting go and starts one more sync, so a push that came while it ran (and
    # was refused the lease) is not left for the next poll.
    sync_requested = models.BooleanField(default=False)
    # One OAuth token refresh at a time per mailbox (inboxes/credentials.py).
    token_refresh_until = models.DateTimeField(null=True, blank=True)
    sync_state = models.CharField(
        max_length=20, choices=SyncState.choices, default=SyncState.PENDING
    )
    sync_done = models.PositiveIntegerField(default=0)
    sync_total = models.PositiveIntegerField(null=True, blank=True)
    last_synced_at = models.DateTimeField(null=True, blank=True)
    sync_last_error = models.TextField(blank=True)
    # Send limits of a personal mailbox (rolling 60 s and 24 h); null: the provider's
    # default (inboxes/outbox/limits.py). Admins change them.
    send_limit_per_day = models.PositiveIntegerField(null=True, blank=True)
    send_limit_per_minute = models.PositiveIntegerField(null=True, blank=True)
    # Push (inboxes/push/): until when something promises to tell us of new mail
    # (an IMAP IDLE held by a watcher, a Gmail watch, Graph subscriptions). While it
    # holds, the poll only runs every PUSH_SAFETY_POLL_SECONDS; when it lapses or
    # fails the mailbox is polled every SYNC_POLL_SECONDS and ``push_error`` says why.
    pushed_until = models.DateTimeField(null=True, blank=True)
    push_error = models.TextField(blank=True)
    # The IMAP watcher holding this mailbox's IDLE (inboxes/sync/watch_leases.py):
    # a lease, renewed by the watcher; one that dies lets it run out and another
    # watcher process, on any machine, takes the mailbox over.
    watch_owner = models.CharField(max_length=100, blank=True, db_index=True)
    watch_lease_until = models.DateTimeField(null=True, blank=True)

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

    @property
    def is_syncing(self) -> bool:
        return self.status == MailboxStatus.SYNCING or self.sync_state in (
            SyncState.INITIAL,
            SyncState.HISTORY,
            SyncState.RUNNING,
        )


# The conversations inbox a team mailbox feeds (R3) and the stored mail live in the
# engine: the rules, every sync and every send touch them, and every consumer (the
# conversations inbox, the CRM) reads them. Their tables keep the names they were
# created with in the conversations app (migration 0005 moved only Django's state).


class Inbox(BaseModel):
    """A conversations inbox (Support, Sales...), fed by at most one team mailbox."""

    account = models.ForeignKey(
        "accounts.Account", on_delete=models.CASCADE, related_name="inboxes"
    )
    name = models.CharField(max_length=200)
    # R3: one inbox per team mailbox, backed by the one-to-one's unique index.
    mailbox = models.OneToOneField(
        "Mailbox", null=True, blank=True, on_delete=models.SET_NULL, related_name="inbox"
    )
    # R9: the name shown on mail sent from this inbox.
    from_name = models.CharField(max_length=200, blank=True)
    signature = models.TextField(blank=True, help_text="Added below every reply.")
    # Who may see the inbox: everyone in the account, or only members of chosen teams.
    visible_to_teams = models.ManyToManyField("accounts.Team", blank=True, related_name="inboxes")
    restricted = models.BooleanField(
        default=False, help_text="Only members of the chosen teams (and admins) see this inbox."
    )
    # An out-of-office answer is shown in its conversation but leaves a closed one
    # closed, unless the inbox chooses otherwise (conversations/threading.py).
    reopen_on_auto_reply = models.BooleanField(
        default=False, help_text="An automatic reply reopens a closed conversation."
    )
    # Replying to an unassigned conversation assigns it to whoever replied
    # (conversations/handling.py conversation_reply).
    assign_on_reply = models.BooleanField(
        default=True, help_text="Replying to an unassigned conversation assigns it to you."
    )

    class Meta:
        db_table = "conversations_inbox"
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["account", "name"], name="unique_inbox_name_per_account"
            )
        ]

    def __str__(self) -> str:
        return self.name


class Direction(models.TextChoices):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


class MessageKind(models.TextChoices):
    """What wrote it: a person, an auto-responder (RFC 3834), a delivery report."""

    EMAIL = "email"
    AUTO_REPLY = "auto_reply"
    BOUNCE = "bounce"


class Message(BaseModel):
    """One email, stored once per account however many mailboxes saw it.

    ``dedupe_key`` (inboxes/mime/dedupe.py) covers every header the sender wrote and
    the body, so the copies of one email delivered to two team addresses (differing
    in trace headers only) are one row, while two different emails stay two. Rows
    stored before keep their v1 key; lookups match either (``ParsedMessage.dedupe_keys``).
    """

    account = models.ForeignKey("accounts.Account", on_delete=models.CASCADE, related_name="+")
    dedupe_key = models.CharField(max_length=64)
    direction = models.CharField(
        max_length=10, choices=Direction.choices, default=Direction.INBOUND
    )
    message_id = models.CharField(max_length=998, blank=True, db_index=True)
    in_reply_to = models.CharField(max_length=998, blank=True)
    references = models.JSONField(default=list, blank=True)
    # Outlook's Thread-Index: its first 22 bytes name the thread, even when a
    # reply carries no References (Exchange and some Outlook paths drop them).
    thread_root = models.CharField(max_length=64, blank=True, db_index=True)
    subject = models.TextField(blank=True)
    from_name = models.CharField(max_length=320, blank=True)
    from_address = models.CharField(max_length=320, blank=True, db_index=True)
    to = models.JSONField(default=list, blank=True)
    cc = models.JSONField(default=list, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    text = models.TextField(blank=True)
    html = models.TextField(blank=True, help_text="Sanitised with nh3 at ingestion.")
    has_remote_images = models.BooleanField(default=False)
    headers = models.JSONField(default=dict, blank=True)
    # The original bytes, kept whatever happens to parsing, through the storage API.
    raw = models.FileField(upload_to="raw/%Y/%m/%d/", blank=True, max_length=500)
    raw_size = models.PositiveIntegerField(default=0)
    parse_error = models.TextField(blank=True)
    # Machine mail (inboxes/mime/): outbound messages are always ``email``.
    kind = models.CharField(max_length=10, choices=MessageKind.choices, default=MessageKind.EMAIL)
    # For a bounce: {"original_message_id", "recipients": [{address, action, status,
    # diagnostic}]}; ``bounce_of`` is the stored email it reports on, once tied.
    bounce = models.JSONField(null=True, blank=True)
    bounce_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="bounces"
    )

    class Meta:
        db_table = "conversations_message"
        ordering = ["sent_at", "created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["account", "dedupe_key"], name="unique_message_per_account"
            )
        ]

    def __str__(self) -> str:
        return self.subject or self.message_id or str(self.pk)


class Attachment(BaseModel):
    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="attachments")
    filename = models.CharField(max_length=255, blank=True)
    content_type = models.CharField(max_length=255, blank=True)
    size = models.PositiveIntegerField(default=0)
    content_id = models.CharField(max_length=255, blank=True)
    inline = models.BooleanField(default=False)
    file = models.FileField(upload_to="attachments/%Y/%m/%d/", max_length=500)

    class Meta:
        db_table = "conversations_attachment"
        ordering = ["created_at"]

    def __str__(self) -> str:
        return self.filename


class FolderRole(models.TextChoices):
    INBOX = "inbox"
    SENT = "sent"


class MailboxFolder(BaseModel):
    """One synced folder and its sync ledger: where the cursor is, what the server
    holds and what was imported, so a gap is seen instead of reported as healthy."""

    mailbox = models.ForeignKey(Mailbox, on_delete=models.CASCADE, related_name="folders")
    role = models.CharField(max_length=10, choices=FolderRole.choices)
    name = models.CharField(max_length=255, help_text="The folder's name on the server.")
    # Provider-specific and opaque to the sync service (IMAP: uidvalidity, last uid, modseq).
    cursor = models.JSONField(default=dict, blank=True)
    # Where the import window starts: reconciliation expects everything since then.
    backfill_from = models.DateTimeField(null=True, blank=True)
    server_count = models.PositiveIntegerField(null=True, blank=True)
    imported_count = models.PositiveIntegerField(default=0)
    resync_count = models.PositiveIntegerField(default=0)
    last_synced_at = models.DateTimeField(null=True, blank=True)
    last_reconciled_at = models.DateTimeField(null=True, blank=True)
    missing_count = models.PositiveIntegerField(default=0)
    # Messages kept raw because they could not be parsed (shown to admins).
    unparsed_count = models.PositiveIntegerField(default=0)
    alert = models.TextField(blank=True)

    class Meta:
        ordering = ["role"]
        constraints = [
            models.UniqueConstraint(fields=["mailbox", "role"], name="one_folder_per_role")
        ]

    def __str__(self) -> str:
        return f"{self.mailbox} {self.name}"


class MailboxMessage(models.Model):
    """A message as one folder of one mailbox holds it (IMAP: uidvalidity:uid).

    The unique key makes re-running a batch harmless. ``message`` is empty when
    the consumer chose not to keep the mail (personal mail with no CRM contact):
    the key is still recorded so it is never fetched again.
    """

    id = models.BigAutoField(primary_key=True)
    folder = models.ForeignKey(MailboxFolder, on_delete=models.CASCADE, related_name="messages")
    provider_key = models.CharField(max_length=255)
    message = models.ForeignKey(
        "Message", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    dedupe_key = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["folder", "provider_key"], name="unique_provider_key_per_folder"
            )
        ]

    def __str__(self) -> str:
        return self.provider_key


class Tombstone(models.Model):
    """Mail deleted in Postkamer: never imported again."""

    id = models.BigAutoField(primary_key=True)
    account = models.ForeignKey("accounts.Account", on_delete=models.CASCADE, related_name="+")
    dedupe_key = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["account", "dedupe_key"], name="unique_tombstone")
        ]

    def __str__(self) -> str:
        return self.dedupe_key


class OutboxState(models.TextChoices):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    UNKNOWN = "unknown"


class OutboxItem(BaseModel):
    """An email to send, written in the same transaction as the user's action.

    State machine (inboxes/outbox/): queued -> sending -> sent | failed |
    unknown. The Message-ID is fixed before the first attempt so a send of
    unknown outcome can be looked up in the Sent folder before anything is resent.
    """

    account = models.ForeignKey("accounts.Account", on_delete=models.CASCADE, related_name="+")
    mailbox = models.ForeignKey(Mailbox, on_delete=models.PROTECT, related_name="outbox")
    message = models.OneToOneField("Message", on_delete=models.PROTECT, related_name="outbox")
    state = models.CharField(max_length=10, choices=OutboxState.choices, default=OutboxState.QUEUED)
    envelope_from = models.CharField(max_length=320)
    recipients = models.JSONField(default=list)
    attempts = models.PositiveIntegerField(default=0)
    claimed_at = models.DateTimeField(null=True, blank=True)
    # Set (and committed) just before the message data goes out: a worker that
    # dies before this point certainly sent nothing and may be retried blindly.
    data_started_at = models.DateTimeField(null=True, blank=True)
    # Set by a claim whose marks are committed without waiting for the disk (the
    # SMTP send run, inboxes/outbox/marks.py): the database's durability epoch then
    # (inboxes/outbox/epoch.py). Once the epoch has changed (the database server
    # crashed, or the machine under SQLite), a mark may have been lost: the item
    # counts as possibly started. Empty: the claim's marks were flushed to disk.
    marks_epoch = models.CharField(max_length=80, blank=True, default="")
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    detail = models.TextField(blank=True, help_text="The server's answer or why it failed.")
    sent_copy_stored = models.BooleanField(default=False)
    # Set while the mailbox's send limit holds the email back: when it will go.
    held_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at"]
        indexes = [
            models.Index(fields=["state", "next_attempt_at"], name="outbox_due"),
            # The send limits' count of a mailbox's sends in its rolling windows
            # (inboxes/outbox/limits.py), once per claim: a range of the index.
            models.Index(fields=["mailbox", "state", "sent_at"], name="outbox_sends"),
            models.Index(
                fields=["mailbox", "held_until"],
                condition=Q(held_until__isnull=False),
                name="outbox_held",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.message_id_header} ({self.state})"

    @property
    def message_id_header(self) -> str:
        return self.message.message_id


class PushStatus(models.TextChoices):
    ACTIVE = "active"
    FAILED = "failed"  # could not be made or renewed: polled meanwhile, retried
    STOPPED = "stopped"  # the provider removed it; made again by the renewal


class PushChannel(BaseModel):
    """A provider's promise to tell us when a mailbox changes: a Gmail ``users.watch``
    (one per mailbox, INBOX and SENT) or a Graph subscription (one per folder).

    A push only says "look": it starts the mailbox's sync, which stays the source of
    truth, so a duplicate, late or forged push changes nothing (inboxes/push/).
    """

    mailbox = models.ForeignKey(Mailbox, on_delete=models.CASCADE, related_name="push_channels")
    provider = models.CharField(max_length=20, choices=Provider.choices)
    # Graph: the folder's role ("inbox", "sent"); Gmail: "" (one watch for both labels).
    folder_role = models.CharField(max_length=20, blank=True)
    # Graph: the subscription's id; Gmail: "" (a watch has none).
    external_id = models.CharField(max_length=255, blank=True, db_index=True)
    # Graph: SHA-256 (hex) of the per-subscription clientState secret; only the hash
    # is kept, the notification's clientState is hashed and compared.
    client_state_hash = models.CharField(max_length=64, blank=True)
    status = models.CharField(max_length=10, choices=PushStatus.choices, default=PushStatus.ACTIVE)
    expires_at = models.DateTimeField(null=True, blank=True)
    renewed_at = models.DateTimeField(null=True, blank=True)
    last_push_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["mailbox", "provider", "folder_role"], name="one_push_channel_per_folder"
            )
        ]

    def __str__(self) -> str:
        return f"{self.provider} push for {self.mailbox_id} {self.folder_role}".strip()


class WatcherProcess(BaseModel):
    """A running IMAP watcher (``manage.py watch_mailboxes``), on any machine. Its
    heartbeat tells the others how many are alive, so each takes its fair share of
    the mailboxes (inboxes/sync/watch_leases.py); admins see them on the mailboxes page."""

    name = models.CharField(max_length=100, unique=True)  # host:pid:random
    hostname = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    capacity = models.PositiveIntegerField(default=5000)
    heartbeat_at = models.DateTimeField()
    watching = models.PositiveIntegerField(default=0)
    rss_bytes = models.PositiveBigIntegerField(default=0)

    def __str__(self) -> str:
        return self.name
