"""Forms of the meetings pages: the connection, scheduling links, and the booker's details.

The forms only turn posted text into the shapes the services take (the API's link
shape, a booking's answers); the services validate and refuse.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, cast
from zoneinfo import available_timezones

from django import forms

from meetings.models import SchedulingLink

DAYS = (
    ("mon", "Monday"),
    ("tue", "Tuesday"),
    ("wed", "Wednesday"),
    ("thu", "Thursday"),
    ("fri", "Friday"),
    ("sat", "Saturday"),
    ("sun", "Sunday"),
)
CALENDARS = (
    ("none", "No calendar"),
    ("google", "Google Calendar"),
    ("microsoft", "Microsoft 365 calendar"),
    ("caldav", "CalDAV calendar"),
)
_RANGE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*[-–]\s*(\d{1,2}):(\d{2})\s*$")


@lru_cache(maxsize=1)
def zone_choices() -> list[tuple[str, str]]:
    """Every IANA zone of zoneinfo (Area/City), UTC first."""
    zones = sorted(z for z in available_timezones() if "/" in z and not z.startswith("Etc/"))
    return [("UTC", "UTC"), *((zone, zone.replace("_", " ")) for zone in zones)]


class MeetingsConnectForm(forms.Form):
    mailbox = forms.ChoiceField(label="Book from", choices=())
    calendar = forms.ChoiceField(label="Calendar", choices=CALENDARS, initial="none")
    caldav_url = forms.URLField(
        label="CalDAV URL", required=False, max_length=500, assume_scheme="https"
    )
    caldav_username = forms.CharField(label="CalDAV user", required=False, max_length=200)
    caldav_password = forms.CharField(
        label="CalDAV password",
        required=False,
        max_length=500,
        widget=forms.PasswordInput(render_value=False),
    )

    def __init__(
        self, *args: Any, mailboxes: list[Any], also: list[Any] | None = None, **kwargs: Any
    ) -> None:
        """``mailboxes``: the user's own, offered in the select. ``also``: a posted
        mailbox that is not theirs, accepted here so that the service refuses it and
        says why (R4 for a team email, R1 for someone else's)."""
        super().__init__(*args, **kwargs)
        self.mailboxes = {str(mailbox.pk): mailbox for mailbox in [*mailboxes, *(also or [])]}
        self.offer(list(self.mailboxes.values()))

    def offer(self, mailboxes: list[Any]) -> None:
        field = cast(forms.ChoiceField, self.fields["mailbox"])
        field.choices = [
            (str(mailbox.pk), f"{mailbox.address} ({mailbox.get_provider_display()})")
            for mailbox in mailboxes
        ]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        mailbox = self.mailboxes.get(str(data.get("mailbox", "")))
        calendar = data.get("calendar", "none")
        if mailbox is None:
            return data
        data["mailbox_obj"] = mailbox
        fits = {"google": "gmail", "microsoft": "microsoft", "caldav": "imap"}
        if calendar in fits and mailbox.provider != fits[calendar]:
            self.add_error(
                "calendar",
                {
                    "google": "Google Calendar goes with a Gmail connection.",
                    "microsoft": "The Microsoft 365 calendar goes with a Microsoft connection.",
                    "caldav": "A CalDAV calendar goes with an IMAP/SMTP connection.",
                }[calendar]
                + " Pick that address, or choose another calendar.",
            )
        if calendar == "caldav":
            for name in ("caldav_url", "caldav_username", "caldav_password"):
                if not data.get(name):
                    self.add_error(name, "Needed for a CalDAV calendar.")
        return data


def _parse_ranges(text: str) -> list[list[str]]:
    ranges = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        match = _RANGE.match(part)
        if not match:
            raise forms.ValidationError(
                f"“{part}” is not a time range: write it like 09:00-17:00 "
                "(two ranges: 09:00-12:00, 13:00-17:00)."
            )
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59 or (h2 == 24 and m2):
            raise forms.ValidationError(f"“{part}” is not a time of day.")
        start, end = f"{h1:02d}:{m1:02d}", f"{h2:02d}:{m2:02d}"
        if end <= start:
            raise forms.ValidationError(f"“{part}” ends before it starts.")
        ranges.append([start, end])
    return ranges


def _ranges_text(ranges: list[list[str]]) -> str:
    return ", ".join(f"{start}-{end}" for start, end in ranges)


class LinkForm(forms.Form):
    name = forms.CharField(label="Name", max_length=200)
    slug = forms.SlugField(
        label="Link address",
        max_length=80,
        help_text="Letters, digits and dashes: people book at /meet/<this>/.",
    )
    durations = forms.CharField(
        label="Durations (minutes)",
        max_length=100,
        initial="30",
        help_text="One or more, separated by commas, e.g. 15, 30, 60.",
    )
    timezone = forms.ChoiceField(label="Your time zone", choices=(), initial="UTC")
    buffer_before = forms.IntegerField(label="Buffer before (minutes)", min_value=0, initial=0)
    buffer_after = forms.IntegerField(label="Buffer after (minutes)", min_value=0, initial=0)
    min_notice_minutes = forms.IntegerField(
        label="Minimum notice (minutes)", min_value=0, initial=240
    )
    days_ahead = forms.IntegerField(label="Bookable days ahead", min_value=1, initial=60)
    questions = forms.CharField(
        label="Questions for the booker",
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="One per line; end a line with * to make it required (e.g. Company *).",
    )
    is_active = forms.BooleanField(label="Taking bookings", required=False, initial=True)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cast(forms.ChoiceField, self.fields["timezone"]).choices = zone_choices()
        for key, label in DAYS:
            self.fields[f"day_{key}"] = forms.CharField(
                label=label,
                required=False,
                max_length=200,
                widget=forms.TextInput(attrs={"placeholder": "unavailable"}),
            )

    @classmethod
    def for_link(cls, link: SchedulingLink) -> LinkForm:
        initial: dict[str, Any] = {
            "name": link.name,
            "slug": link.slug,
            "durations": ", ".join(str(d) for d in link.durations),
            "timezone": link.timezone,
            "buffer_before": link.buffer_before,
            "buffer_after": link.buffer_after,
            "min_notice_minutes": link.min_notice_minutes,
            "days_ahead": link.days_ahead,
            "questions": "\n".join(
                q.get("label", "") + (" *" if q.get("required") else "") for q in link.questions
            ),
            "is_active": link.is_active,
        }
        for key, _label in DAYS:
            initial[f"day_{key}"] = _ranges_text(link.availability.get(key, []))
        return cls(initial=initial)

    @classmethod
    def blank(cls, timezone: str = "UTC") -> LinkForm:
        initial: dict[str, Any] = {"timezone": timezone}
        for key, _label in DAYS[:5]:
            initial[f"day_{key}"] = "09:00-17:00"
        form = cls(initial=initial)
        if timezone == "UTC":
            # meetings-settings.js picks the browser's zone instead, where it knows one.
            form.fields["timezone"].widget.attrs["data-detect"] = "browser"
        return form

    def day_fields(self) -> list[forms.BoundField]:
        return [self[f"day_{key}"] for key, _label in DAYS]

    def clean_durations(self) -> list[int]:
        values = []
        for part in filter(None, (p.strip() for p in self.cleaned_data["durations"].split(","))):
            if not part.isdigit() or not 5 <= int(part) <= 720:
                raise forms.ValidationError(
                    f"“{part}” is not a duration: use whole minutes between 5 and 720."
                )
            values.append(int(part))
        if not values:
            raise forms.ValidationError("Offer at least one duration, e.g. 30.")
        return sorted(set(values))

    def clean_questions(self) -> list[dict[str, Any]]:
        questions = []
        for line in self.cleaned_data.get("questions", "").splitlines():
            label = line.strip()
            required = label.endswith("*")
            label = label.rstrip("*").strip()
            if label:
                questions.append({"label": label[:200], "required": required})
        return questions

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        availability: dict[str, list[list[str]]] = {}
        for key, _label in DAYS:
            try:
                ranges = _parse_ranges(data.get(f"day_{key}", "") or "")
            except forms.ValidationError as exc:
                self.add_error(f"day_{key}", exc)
                continue
            if ranges:
                availability[key] = ranges
        data["availability"] = availability
        return data

    def link_data(self) -> dict[str, Any]:
        """The cleaned form in the API's link shape (for links.link_create / link_update)."""
        data = self.cleaned_data
        return {
            "name": data["name"],
            "slug": data["slug"],
            "durations": data["durations"],
            "timezone": data["timezone"],
            "availability": data["availability"],
            "buffer_before": data["buffer_before"],
            "buffer_after": data["buffer_after"],
            "min_notice_minutes": data["min_notice_minutes"],
            "days_ahead": data["days_ahead"],
            "questions": data["questions"],
            "is_active": data["is_active"],
        }


class BookingForm(forms.Form):
    """The booker's details; one field per question of the link (``q0``, ``q1``...)."""

    name = forms.CharField(label="Your name", max_length=200)
    email = forms.EmailField(label="Your email", max_length=320)

    def __init__(self, *args: Any, questions: list[dict[str, Any]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.questions = questions
        for index, question in enumerate(questions):
            self.fields[f"q{index}"] = forms.CharField(
                label=question.get("label", ""),
                required=bool(question.get("required")),
                max_length=2000,
                widget=forms.Textarea(attrs={"rows": 2}),
            )

    def question_fields(self) -> list[forms.BoundField]:
        return [self[f"q{index}"] for index in range(len(self.questions))]

    def answers(self) -> dict[str, str]:
        return {
            question["label"]: self.cleaned_data.get(f"q{index}", "")
            for index, question in enumerate(self.questions)
            if self.cleaned_data.get(f"q{index}")
        }
