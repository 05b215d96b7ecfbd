from django.db import models

from core.models import BaseModel
from inboxes.models import Inbox, Message


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
    # Its canonical form (DESIGN.md 5; blank when it is not an address): what a CRM
    # contact's address is compared with.
    customer_canonical = models.CharField(max_length=320, blank=True)
    # The CRM contact with the customer's address (conversations/contact_links.py).
    contact = models.ForeignKey(
        "crm.Contact",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="conversations",
    )
    last_message_at = models.DateTimeField(null=True, blank=True)
    message_count = models.PositiveIntegerField(default=0)
    # For the metrics: when the team first answered, when it was (last) closed.
    first_response_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    # What the conversation list shows, kept current by conversations/summary.py
    # so that the list reads no messages.
    customer_name = models.CharField(max_length=320, blank=True)
    snippet = models.CharField(max_length=200, blank=True)
    # Opened by a delivery report that names no email of this inbox: never routed,
    # never answered automatically, listed under "Bounces" (conversations/threading.py).
    is_bounce = models.BooleanField(default=False)
    # Snoozed: out of the open lists until then, when conversations/snooze.py wakes it.
    snoozed_until = models.DateTimeField(null=True, blank=True)
    messages = models.ManyToManyField(
        Message, through="ConversationMessage", related_name="conversations"
    )
    # Not a column: the messages in thread order, set by selectors.conversation_detail.
    thread: list[Message]

    class Meta:
        ordering = ["-last_message_at"]
        indexes = [
            # Newest first with any status (the unfiltered list, ?inbox=, ?assignee=,
            # unassigned): a range scan that stops after a page instead of sorting
            # every visible row (bench/inbox.py: 69 ms -> 0.2 ms at 100k).
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
            # A new contact finds the conversations with its address.
            models.Index(fields=["account", "customer_canonical"], name="conv_customer_canonical"),
            models.Index(
                fields=["account", "-last_message_at", "-id"],
                condition=models.Q(is_bounce=True),
                name="conv_bounces_recent",
            ),
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
    SNOOZED = "snoozed"
    WOKE = "woke"


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
    # Each @handle of the text that named someone: {"ann": "<user id>"}; the note is
    # highlighted from this, so an ambiguous or unknown name never is.
    mention_handles = models.JSONField(default=dict, blank=True)

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


class SavedReply(BaseModel):
    """A reply an inbox's agents insert from the composer; admins keep them on the
    inbox's settings. ``body`` may hold variables (conversations/saved_replies.py)."""

    inbox = models.ForeignKey(Inbox, on_delete=models.CASCADE, related_name="saved_replies")
    name = models.CharField(max_length=100)
    body = models.TextField()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["inbox", "name"], name="unique_saved_reply_name")
        ]

    def __str__(self) -> str:
        return self.name
