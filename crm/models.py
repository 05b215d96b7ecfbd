"""The CRM: contacts, the one-to-one emails logged on them, tracking, R10 preferences,
sequences. Mail itself is stored once by the engine (``inboxes.Message``); a CRM
``Email`` ties one stored message to one contact."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from core.models import BaseModel
from inboxes.models import Direction, Mailbox, Message


class Contact(BaseModel):
    account = models.ForeignKey("accounts.Account", on_delete=models.CASCADE, related_name="+")
    email = models.CharField(max_length=320, help_text="As it was typed or imported.")
    # DESIGN.md section 5: two contacts of an account never share this.
    canonical_email = models.CharField(max_length=320)
    name = models.CharField(max_length=200, blank=True)
    company = models.CharField(max_length=200, blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    last_activity_at = models.DateTimeField(null=True, blank=True)
    # A hard bounce (5.x.x) of mail to this address: warn before the next email.
    bounced_at = models.DateTimeField(null=True, blank=True)
    bounce_detail = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["account", "canonical_email"], name="unique_contact_email_per_account"
            )
        ]
        indexes = [models.Index(fields=["account", "-created_at", "-id"], name="contact_recent")]

    def __str__(self) -> str:
        return self.name or self.email


class Preferences(models.Model):
    """R10, per user: log & track defaults, the never-log list, the default font."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        primary_key=True,
        on_delete=models.CASCADE,
        related_name="crm_preferences",
    )
    log_sent_email = models.BooleanField(default=True)
    track_opens = models.BooleanField(default=True)
    track_clicks = models.BooleanField(default=True)
    # Canonical addresses ("ann@x.com") and domains ("@x.com"): never stored from a
    # personal mailbox, even when they are contacts.
    never_log = models.JSONField(default=list, blank=True)
    font_family = models.CharField(max_length=100, default="Arial")
    font_size = models.PositiveSmallIntegerField(default=14)
    # The personal mailbox this user sent from last: preselected next time.
    last_mailbox = models.ForeignKey(
        Mailbox, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    def __str__(self) -> str:
        return f"preferences of {self.user_id}"


class Email(BaseModel):
    """One email with one contact, either way: sent from the CRM, or logged from a
    personal mailbox's INBOX or Sent folder. ``message`` holds the bytes."""

    account = models.ForeignKey("accounts.Account", on_delete=models.CASCADE, related_name="+")
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="emails")
    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="crm_emails")
    mailbox = models.ForeignKey(
        Mailbox, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    direction = models.CharField(max_length=10, choices=Direction.choices)
    sent_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # R10 "log sent email": off, the email is sent but not on the contact's timeline.
    logged = models.BooleanField(default=True)
    track_opens = models.BooleanField(default=False)
    track_clicks = models.BooleanField(default=False)
    opens = models.PositiveIntegerField(default=0)
    clicks = models.PositiveIntegerField(default=0)
    machine_opens = models.PositiveIntegerField(default=0)
    replied_to = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="replies"
    )
    at = models.DateTimeField(help_text="When it was sent or received.")

    class Meta:
        ordering = ["-at"]
        constraints = [
            models.UniqueConstraint(fields=["contact", "message"], name="unique_email_per_contact")
        ]
        indexes = [models.Index(fields=["contact", "-at"], name="email_contact_recent")]

    def __str__(self) -> str:
        return f"{self.direction} {self.message_id}"


class TrackedLink(models.Model):
    """A link as it was in the email: a click token redirects only here."""

    id = models.BigAutoField(primary_key=True)
    email = models.ForeignKey(Email, on_delete=models.CASCADE, related_name="links")
    position = models.PositiveIntegerField()
    url = models.TextField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["email", "position"], name="unique_link_position")
        ]

    def __str__(self) -> str:
        return self.url


class TrackingKind(models.TextChoices):
    OPEN = "open"
    CLICK = "click"


class TrackingEvent(BaseModel):
    email = models.ForeignKey(Email, on_delete=models.CASCADE, related_name="tracking_events")
    kind = models.CharField(max_length=10, choices=TrackingKind.choices)
    link = models.ForeignKey(TrackedLink, null=True, blank=True, on_delete=models.SET_NULL)
    # Most likely a machine (an image proxy, a link scanner): counted apart.
    machine = models.BooleanField(default=False)
    reason = models.CharField(max_length=200, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.kind} of {self.email_id}"


class Note(BaseModel):
    account = models.ForeignKey("accounts.Account", on_delete=models.CASCADE, related_name="+")
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="notes")
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    text = models.TextField()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.text[:50]


class TimelineType(models.TextChoices):
    EMAIL = "email"
    OPEN = "open"
    CLICK = "click"
    SEQUENCE = "sequence"
    MEETING = "meeting"
    NOTE = "note"


class TimelineEvent(BaseModel):
    """One line of a contact's timeline, written when it happens, so that reading a
    timeline is one index range scan whatever the contact's history holds."""

    account = models.ForeignKey("accounts.Account", on_delete=models.CASCADE, related_name="+")
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="timeline")
    type = models.CharField(max_length=10, choices=TimelineType.choices)
    at = models.DateTimeField()
    email = models.ForeignKey(
        Email, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["contact", "-at", "-id"], name="timeline_contact_recent")]

    def __str__(self) -> str:
        return f"{self.type} at {self.at}"


class Sequence(BaseModel):
    account = models.ForeignKey("accounts.Account", on_delete=models.CASCADE, related_name="+")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    name = models.CharField(max_length=200)
    mailbox = models.ForeignKey(Mailbox, on_delete=models.PROTECT, related_name="+")
    window_start = models.TimeField(default="09:00")
    window_end = models.TimeField(default="17:00")
    timezone = models.CharField(max_length=64, default="UTC")
    business_days_only = models.BooleanField(default=True)
    # RFC 3834 auto-replies (out of office) do not count as a reply unless this is set.
    stop_on_auto_reply = models.BooleanField(default=False)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name


class SequenceStep(models.Model):
    id = models.BigAutoField(primary_key=True)
    sequence = models.ForeignKey(Sequence, on_delete=models.CASCADE, related_name="steps")
    position = models.PositiveSmallIntegerField(help_text="1 for the first step.")
    subject = models.CharField(max_length=998)
    text = models.TextField(blank=True)
    html = models.TextField(blank=True)
    delay_days = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["sequence", "position"]
        constraints = [
            models.UniqueConstraint(fields=["sequence", "position"], name="unique_step_position")
        ]

    def __str__(self) -> str:
        return f"step {self.position} of {self.sequence_id}"


class EnrollmentState(models.TextChoices):
    ACTIVE = "active"
    PAUSED = "paused"
    FINISHED = "finished"
    STOPPED = "stopped"


class StopReason(models.TextChoices):
    REPLIED = "replied"
    BOUNCED = "bounced"
    UNENROLLED = "unenrolled"


LIVE_ENROLLMENT_STATES = (EnrollmentState.ACTIVE, EnrollmentState.PAUSED)


class Enrollment(BaseModel):
    account = models.ForeignKey("accounts.Account", on_delete=models.CASCADE, related_name="+")
    sequence = models.ForeignKey(Sequence, on_delete=models.CASCADE, related_name="enrollments")
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="enrollments")
    state = models.CharField(
        max_length=10, choices=EnrollmentState.choices, default=EnrollmentState.ACTIVE
    )
    stop_reason = models.CharField(max_length=12, choices=StopReason.choices, blank=True)
    steps_sent = models.PositiveSmallIntegerField(default=0)
    next_step_at = models.DateTimeField(null=True, blank=True)
    enrolled_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    ended_at = models.DateTimeField(null=True, blank=True)
    # Step 1's Message-ID: later steps reply in its thread.
    thread_message_id = models.CharField(max_length=998, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # A contact is in at most one live sequence: two simultaneous enrolments
            # cannot both win (409 contact_in_sequence).
            models.UniqueConstraint(
                fields=["contact"],
                condition=Q(state__in=["active", "paused"]),
                name="one_live_enrollment_per_contact",
            )
        ]
        indexes = [models.Index(fields=["state", "next_step_at"], name="enrollment_due")]

    def __str__(self) -> str:
        return f"{self.contact_id} in {self.sequence_id}"


class StepSend(models.Model):
    """Step ``position`` of an enrolment was handed to the outbox: at most once, by the
    unique constraint, whatever workers die or beats run twice."""

    id = models.BigAutoField(primary_key=True)
    enrollment = models.ForeignKey(Enrollment, on_delete=models.CASCADE, related_name="sends")
    position = models.PositiveSmallIntegerField()
    email = models.OneToOneField(
        Email, null=True, blank=True, on_delete=models.SET_NULL, related_name="step_send"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["enrollment", "position"], name="unique_step_send")
        ]

    def __str__(self) -> str:
        return f"step {self.position} of {self.enrollment_id}"
