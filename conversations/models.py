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
