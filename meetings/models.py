from django.conf import settings
from django.db import models

from core.models import BaseModel


class CalendarKind(models.TextChoices):
    NONE = "none", "No calendar"
    GOOGLE = "google", "Google Calendar"
    MICROSOFT = "microsoft", "Microsoft 365 calendar"
    CALDAV = "caldav", "CalDAV calendar"


class CalendarStatus(models.TextChoices):
    OK = "ok"
    NEEDS_CONSENT = "needs_consent"  # the mailbox's grant lacks the calendar scope
    ERROR = "error"  # the last read or write failed (see calendar_error)


class MeetingsConnection(BaseModel):
    """The address a user's meetings tool books from (one per user).

    ``mailbox`` is the user's own connected personal mailbox with that address: the
    invitations go out through it, and its sign-in (Gmail, Microsoft 365) also reads
    and writes the calendar. A CalDAV calendar (IMAP/SMTP mailboxes) has its own
    URL, user and password; the password is sealed like a mailbox's secrets
    (``caldav_secret``, see meetings/calendars/caldav.py).
    """

    account = models.ForeignKey("accounts.Account", on_delete=models.CASCADE, related_name="+")
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="meetings_connection"
    )
    address = models.CharField(max_length=320)
    canonical_address = models.CharField(max_length=320)
    mailbox = models.ForeignKey(
        "inboxes.Mailbox", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    calendar = models.CharField(
        max_length=16, choices=CalendarKind.choices, default=CalendarKind.NONE
    )
    calendar_status = models.CharField(
        max_length=16, choices=CalendarStatus.choices, default=CalendarStatus.OK
    )
    calendar_error = models.CharField(max_length=1000, blank=True)
    # Google: "primary"; Microsoft: the default calendar (blank); CalDAV: the calendar's URL.
    calendar_id = models.CharField(max_length=1000, blank=True)
    caldav_url = models.CharField(max_length=1000, blank=True)
    caldav_username = models.CharField(max_length=320, blank=True)
    caldav_secret = models.BinaryField(null=True, blank=True)  # {"password": ...}, encrypted

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["account", "canonical_address"], name="unique_meetings_address_per_account"
            )
        ]

    def __str__(self) -> str:
        return self.address


def _no_durations() -> list[int]:
    return [30]


def _weekdays_nine_to_five() -> dict[str, list[list[str]]]:
    return {day: [["09:00", "17:00"]] for day in ("mon", "tue", "wed", "thu", "fri")}


class SchedulingLink(BaseModel):
    """A page where people book time with ``owner`` (public at /meet/{slug}/).

    ``availability`` is weekly, in ``timezone``: {"mon": [["09:00", "17:00"]], ...};
    buffers and notice in minutes. ``questions``: [{"label": str, "required": bool}].
    """

    account = models.ForeignKey("accounts.Account", on_delete=models.CASCADE, related_name="+")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="scheduling_links"
    )
    name = models.CharField(max_length=200)
    # Public URLs have no account in them: slugs are unique across the installation.
    slug = models.SlugField(max_length=80, unique=True)
    durations = models.JSONField(default=_no_durations)
    timezone = models.CharField(max_length=64, default="UTC")
    availability = models.JSONField(default=_weekdays_nine_to_five)
    buffer_before = models.PositiveIntegerField(default=0)
    buffer_after = models.PositiveIntegerField(default=0)
    min_notice_minutes = models.PositiveIntegerField(default=240)
    days_ahead = models.PositiveIntegerField(default=60)
    questions = models.JSONField(default=list, blank=True)
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["name", "created_at"]

    def __str__(self) -> str:
        return self.name


class BookingState(models.TextChoices):
    CONFIRMED = "confirmed"
    CANCELLED = "cancelled"


class Booking(BaseModel):
    """A meeting booked through a scheduling link.

    ``uid`` is the iCalendar UID, stable for the booking's life (a reschedule keeps it
    and raises ``sequence``); ``token`` opens the booker's cancel and reschedule pages.
    """

    account = models.ForeignKey("accounts.Account", on_delete=models.CASCADE, related_name="+")
    link = models.ForeignKey(SchedulingLink, on_delete=models.CASCADE, related_name="bookings")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="bookings"
    )
    contact = models.ForeignKey(
        "crm.Contact", null=True, blank=True, on_delete=models.SET_NULL, related_name="bookings"
    )
    start = models.DateTimeField(db_index=True)
    end = models.DateTimeField()
    name = models.CharField(max_length=200)
    email = models.CharField(max_length=320)
    answers = models.JSONField(default=dict, blank=True)
    timezone = models.CharField(max_length=64, default="UTC")  # the booker's
    state = models.CharField(
        max_length=16, choices=BookingState.choices, default=BookingState.CONFIRMED
    )
    uid = models.CharField(max_length=255, unique=True)
    sequence = models.PositiveIntegerField(default=0)
    token = models.CharField(max_length=64, unique=True)
    calendar_event_id = models.CharField(max_length=500, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    cancel_reason = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["start"]

    def __str__(self) -> str:
        return f"{self.name} at {self.start:%Y-%m-%d %H:%M}"


class BookingClaim(BaseModel):
    """One CLAIM_MINUTES unit of an owner's time held by a confirmed booking (its
    buffers included). The unique constraint is what lets exactly one of two visitors
    racing for overlapping times win, on every database: no check-then-act."""

    CLAIM_MINUTES = 5

    booking = models.ForeignKey(Booking, on_delete=models.CASCADE, related_name="claims")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    unit = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["owner", "unit"], name="one_booking_per_owner_unit")
        ]
