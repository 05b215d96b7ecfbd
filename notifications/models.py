"""Notifications: who hears about what (DESIGN.md section 4, "notification")."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from core.models import BaseModel


class Kind(models.TextChoices):
    MAILBOX_NEEDS_ATTENTION = "mailbox_needs_attention", "A mailbox needs attention"
    SYNC_GAP = "sync_gap", "Mail found missing by the sync's check"
    SEND_FAILED = "send_failed", "An email I sent failed"
    SEND_UNKNOWN = "send_unknown", "An email I sent may not have arrived"
    MENTION = "mention", "Someone mentioned me in a note"
    ASSIGNED = "assigned", "A conversation was assigned to me"
    EMAIL_BOUNCED = "email_bounced", "An email I sent bounced"


class SubjectType(models.TextChoices):
    MAILBOX = "mailbox"
    CONVERSATION = "conversation"
    EMAIL = "email"
    ENROLLMENT = "enrollment"


class Incident(BaseModel):
    """Something that went wrong and is still wrong: one notice however often a sync
    sees it again, and resolved (the notice says so) when it goes away."""

    account = models.ForeignKey("accounts.Account", on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=40, choices=Kind.choices)
    subject_type = models.CharField(max_length=20, choices=SubjectType.choices)
    subject_id = models.CharField(max_length=64)
    detail = models.TextField(blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["kind", "subject_type", "subject_id"],
                condition=Q(resolved_at__isnull=True),
                name="one_open_incident_per_subject",
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.subject_type}:{self.subject_id}"


class Notification(BaseModel):
    account = models.ForeignKey("accounts.Account", on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications"
    )
    kind = models.CharField(max_length=40, choices=Kind.choices)
    text = models.TextField()
    url = models.CharField(max_length=500, blank=True)
    subject_type = models.CharField(max_length=20, choices=SubjectType.choices)
    subject_id = models.CharField(max_length=64)
    # A stable key of what it is about ("outbox:<id>:send_failed"): one notice per
    # person and cause, whatever reports it twice.
    key = models.CharField(max_length=200)
    incident = models.ForeignKey(
        Incident, null=True, blank=True, on_delete=models.SET_NULL, related_name="notifications"
    )
    in_app = models.BooleanField(default=True)
    read_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    # By email, batched (notifications/mailing.py): pending until a digest took it.
    email_pending = models.BooleanField(default=False)
    emailed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["user", "key"], name="one_notification_per_cause")
        ]
        indexes = [
            models.Index(fields=["user", "-created_at", "-id"], name="notification_recent"),
            models.Index(
                fields=["user"],
                condition=Q(read_at__isnull=True, in_app=True),
                name="notification_unread",
            ),
            models.Index(
                fields=["user", "created_at"],
                condition=Q(email_pending=True),
                name="notification_email_pending",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} for {self.user_id}"


class Setting(models.Model):
    """One person's choice for one kind; no row: in the app and by email."""

    id = models.BigAutoField(primary_key=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notification_settings"
    )
    kind = models.CharField(max_length=40, choices=Kind.choices)
    in_app = models.BooleanField(default=True)
    email = models.BooleanField(default=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "kind"], name="one_setting_per_kind")
        ]

    def __str__(self) -> str:
        return f"{self.user_id} {self.kind}"


class Digest(models.Model):
    """When a person was last emailed a digest: at most one per ``NOTIFICATION_EMAIL_MINUTES``."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, primary_key=True, on_delete=models.CASCADE, related_name="+"
    )
    last_sent_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"digest of {self.user_id}"
