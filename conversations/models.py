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
    messages = models.ManyToManyField(
        Message, through="ConversationMessage", related_name="conversations"
    )

    class Meta:
        ordering = ["-last_message_at"]
        indexes = [
            models.Index(
                fields=["inbox", "status", "-last_message_at"], name="conv_inbox_status_recent"
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
