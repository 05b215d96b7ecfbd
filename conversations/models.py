from django.db import models

from core.models import BaseModel


class Inbox(BaseModel):
    """A conversations inbox (Support, Sales...), fed by at most one team mailbox."""

    account = models.ForeignKey(
        "accounts.Account", on_delete=models.CASCADE, related_name="inboxes"
    )
    name = models.CharField(max_length=200)
    # R3: one inbox per team mailbox, backed by the one-to-one's unique index.
    mailbox = models.OneToOneField(
        "inboxes.Mailbox", null=True, blank=True, on_delete=models.SET_NULL, related_name="inbox"
    )
    # R9: the name shown on mail sent from this inbox.
    from_name = models.CharField(max_length=200, blank=True)
    signature = models.TextField(blank=True, help_text="Added below every reply.")
    # Who may see the inbox: everyone in the account, or only members of chosen teams.
    visible_to_teams = models.ManyToManyField("accounts.Team", blank=True, related_name="inboxes")
    restricted = models.BooleanField(
        default=False, help_text="Only members of the chosen teams (and admins) see this inbox."
    )

    class Meta:
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


class Message(BaseModel):
    """One email, stored once per account however many mailboxes saw it.

    ``dedupe_key`` (inboxes/parsing.py) covers Message-ID, sender, date, subject
    and the body, so the copies of one email delivered to two team addresses are
    one row, while two different emails that reuse a Message-ID stay two.
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

    class Meta:
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
        ordering = ["created_at"]

    def __str__(self) -> str:
        return self.filename


class ConversationStatus(models.TextChoices):
    OPEN = "open"
    CLOSED = "closed"


class Conversation(BaseModel):
    account = models.ForeignKey("accounts.Account", on_delete=models.CASCADE, related_name="+")
    inbox = models.ForeignKey(Inbox, on_delete=models.CASCADE, related_name="conversations")
    subject = models.TextField(blank=True)
    status = models.CharField(
        max_length=10, choices=ConversationStatus.choices, default=ConversationStatus.OPEN
    )
    assignee = models.ForeignKey(
        "accounts.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The customer's address: with References it keeps unrelated people who answer
    # the same newsletter apart.
    customer_address = models.CharField(max_length=320, blank=True, db_index=True)
    last_message_at = models.DateTimeField(null=True, blank=True)
    message_count = models.PositiveIntegerField(default=0)
    # For the metrics: when the team first answered, when it was (last) closed.
    first_response_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    # What the conversation list shows, kept current by conversations/summary.py
    # so that the list reads no messages.
    customer_name = models.CharField(max_length=320, blank=True)
    snippet = models.CharField(max_length=200, blank=True)
    messages = models.ManyToManyField(
        Message, through="ConversationMessage", related_name="conversations"
    )

    class Meta:
        ordering = ["-last_message_at"]
        indexes = [
            # Newest first with any status (the unfiltered list, ?inbox=, ?assignee=,
            # unassigned): a range scan that stops after a page instead of sorting
            # every visible row (bench/INBOX_RESULTS.md: 69 ms -> 0.2 ms at 100k).
            models.Index(fields=["account", "-last_message_at", "-id"], name="conv_account_recent"),
            models.Index(fields=["inbox", "-last_message_at", "-id"], name="conv_inbox_recent"),
            models.Index(
                fields=["assignee", "-last_message_at", "-id"], name="conv_assignee_any_recent"
            ),
            models.Index(
                fields=["account", "-last_message_at", "-id"],
                condition=models.Q(assignee__isnull=True),
                name="conv_unassigned_recent",
            ),
            models.Index(
                fields=["inbox", "status", "-last_message_at"], name="conv_inbox_status_recent"
            ),
            models.Index(
                fields=["account", "status", "-last_message_at"], name="conv_account_status_recent"
            ),
            models.Index(
                fields=["assignee", "status", "-last_message_at"], name="conv_assignee_recent"
            ),
            # The left pane's counts of open conversations per inbox and assignee.
            models.Index(fields=["account", "status", "inbox", "assignee"], name="conv_nav_counts"),
        ]

    def __str__(self) -> str:
        return self.subject or str(self.pk)


class ConversationMessage(models.Model):
    """A message in a conversation: one email is in at most one conversation per inbox,
    so re-running ingestion can never thread it twice."""

    inbox = models.ForeignKey(Inbox, on_delete=models.CASCADE, related_name="+")
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE)
    message = models.ForeignKey(Message, on_delete=models.CASCADE)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["inbox", "message"], name="one_conversation_per_inbox_message"
            )
        ]

    def __str__(self) -> str:
        return f"{self.conversation_id}: {self.message_id}"


class RoutingMode(models.TextChoices):
    NONE = "none", "No automatic assignment"
    ROUND_ROBIN = "round_robin", "Round-robin"


class RoutingRule(BaseModel):
    """How an inbox assigns new conversations (R9), read by conversations/routing.py."""

    inbox = models.OneToOneField(Inbox, on_delete=models.CASCADE, related_name="routing")
    mode = models.CharField(max_length=20, choices=RoutingMode.choices, default=RoutingMode.NONE)
    # Candidates: chosen users, or every member of a team.
    users = models.ManyToManyField("accounts.User", blank=True, related_name="+")
    team = models.ForeignKey(
        "accounts.Team", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Whose turn it was last; the next assignment goes to the candidate after them.
    last_assigned = models.ForeignKey(
        "accounts.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    def __str__(self) -> str:
        return f"{self.inbox}: {self.mode}"


class EventKind(models.TextChoices):
    ASSIGNED = "assigned"
    UNASSIGNED = "unassigned"
    CLOSED = "closed"
    REOPENED = "reopened"


class ConversationEvent(models.Model):
    """What happened to a conversation, and why (routing explains its choice here)."""

    id = models.BigAutoField(primary_key=True)
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=20, choices=EventKind.choices)
    actor = models.ForeignKey(
        "accounts.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    assignee = models.ForeignKey(
        "accounts.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    detail = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.conversation_id} {self.kind}"


class Note(BaseModel):
    """An internal note between the messages, never sent to the customer."""

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="notes")
    author = models.ForeignKey("accounts.User", on_delete=models.PROTECT, related_name="+")
    text = models.TextField()
    mentions = models.ManyToManyField("accounts.User", blank=True, related_name="mentioned_in")

    class Meta:
        ordering = ["created_at"]

    def __str__(self) -> str:
        return self.text[:50]


class ReadState(models.Model):
    """When a user last read a conversation: it is unread while newer mail exists."""

    id = models.BigAutoField(primary_key=True)
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey("accounts.User", on_delete=models.CASCADE, related_name="+")
    read_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["conversation", "user"], name="one_read_state_per_user")
        ]

    def __str__(self) -> str:
        return f"{self.user_id} read {self.conversation_id}"
