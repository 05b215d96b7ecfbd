from django.conf import settings
from django.db import models

from core.models import BaseModel


class MeetingsConnection(BaseModel):
    """The address a user's meetings tool books from (one per user).

    Minimal for now: it exists so that R4 (a team address in the conversations
    tool cannot be used by the meetings tool) is enforced.
    """

    account = models.ForeignKey("accounts.Account", on_delete=models.CASCADE, related_name="+")
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="meetings_connection"
    )
    address = models.CharField(max_length=320)
    canonical_address = models.CharField(max_length=320)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["account", "canonical_address"], name="unique_meetings_address_per_account"
            )
        ]

    def __str__(self) -> str:
        return self.address
