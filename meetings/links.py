"""Scheduling links: created, changed and removed here (API and pages alike).

Everything slots.py relies on is checked on the way in: durations, buffers and
availability times on ``BookingClaim.CLAIM_MINUTES`` boundaries, a known zone,
questions with unique labels. Errors are ``invalid`` with the field named.
"""

from __future__ import annotations

import re
import secrets
from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone as django_timezone
from django.utils.text import slugify

from accounts.models import User
from core.errors import Invalid
from core.text import check_single_line
from meetings.models import BookingClaim, BookingState, SchedulingLink
from meetings.slots import WEEKDAYS, wall_minutes, zone

UNIT = BookingClaim.CLAIM_MINUTES
MAX_DURATION = 8 * 60
MAX_BUFFER = 4 * 60
MAX_NOTICE = 60 * 24 * 90
MAX_DAYS_AHEAD = 365
MAX_QUESTIONS = 10
MAX_WINDOWS_PER_DAY = 12
_SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{1,78}[a-z0-9])$")

FIELDS = (
    "name",
    "slug",
    "durations",
    "timezone",
    "availability",
    "buffer_before",
    "buffer_after",
    "min_notice_minutes",
    "days_ahead",
    "questions",
    "is_active",
)


def _int(value: Any, field: str, low: int, high: int, *, multiple: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise Invalid(
            f"The {field.replace('_', ' ')} must be a whole number from {low} to {high}.",
            errors={field: [f"Enter a whole number from {low} to {high}."]},
        )
    if value % multiple:
        raise Invalid(
            f"The {field.replace('_', ' ')} must be a multiple of {multiple} minutes.",
            errors={field: [f"Use a multiple of {multiple} minutes."]},
        )
    return value


def _durations(value: Any) -> list[int]:
    if not isinstance(value, list) or not value or len(value) > 10:
        raise Invalid(
            "Offer one to ten meeting lengths.",
            errors={"durations": ["Give one to ten lengths in minutes."]},
        )
    return sorted({_int(item, "durations", UNIT, MAX_DURATION, multiple=UNIT) for item in value})


def _availability(value: Any) -> dict[str, list[list[str]]]:
    def bad(message: str) -> Invalid:
        return Invalid(
            f"The weekly availability is not valid: {message}",
            errors={"availability": [message]},
        )

    if not isinstance(value, dict):
        raise bad('Give it as {"mon": [["09:00", "17:00"]], ...}.')
    result: dict[str, list[list[str]]] = {}
    for day, windows in value.items():
        if day not in WEEKDAYS:
            raise bad(f"{str(day)[:20]!r} is not a day; use {', '.join(WEEKDAYS)}.")
        if not isinstance(windows, list) or len(windows) > MAX_WINDOWS_PER_DAY:
            raise bad(f"{day}: give up to {MAX_WINDOWS_PER_DAY} [start, end] pairs.")
        spans = []
        for window in windows:
            if (
                not isinstance(window, list | tuple)
                or len(window) != 2
                or not all(isinstance(part, str) for part in window)
            ):
                raise bad(f'{day}: each window is a pair like ["09:00", "17:00"].')
            try:
                begin, end = wall_minutes(window[0]), wall_minutes(window[1])
            except (ValueError, TypeError):
                raise bad(f"{day}: times are HH:MM, from 00:00 to 24:00.") from None
            if begin >= end:
                raise bad(f"{day}: a window ends after it starts.")
            if begin % UNIT or end % UNIT:
                raise bad(f"{day}: times are on {UNIT}-minute marks (09:00, 09:05...).")
            spans.append((begin, end))
        spans.sort()
        for (_, first_end), (second_begin, _) in zip(spans, spans[1:], strict=False):
            if second_begin < first_end:
                raise bad(f"{day}: windows overlap.")
        result[day] = [[_hhmm(begin), _hhmm(end)] for begin, end in spans]
    return result


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _questions(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or len(value) > MAX_QUESTIONS:
        raise Invalid(
            f"Ask up to {MAX_QUESTIONS} questions.",
            errors={"questions": [f"Give up to {MAX_QUESTIONS} questions."]},
        )
    result: list[dict[str, Any]] = []
    seen: set[str] = set()
    for item in value:
        label = item.get("label") if isinstance(item, dict) else None
        required = item.get("required", False) if isinstance(item, dict) else None
        if not isinstance(label, str) or not label.strip() or len(label) > 200:
            raise Invalid(
                "Each question needs a label of up to 200 characters.",
                errors={"questions": ["Each question needs a label (up to 200 characters)."]},
            )
        if not isinstance(required, bool):
            raise Invalid(
                "A question's required flag is true or false.",
                errors={"questions": ["required is true or false."]},
            )
        label = check_single_line(label.strip(), field="questions", label="question")
        if label.casefold() in seen:
            raise Invalid(
                f"Two questions are labelled {label!r}.",
                errors={"questions": ["Labels must differ."]},
            )
        seen.add(label.casefold())
        result.append({"label": label, "required": required})
    return result


def _name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or len(value.strip()) > 200:
        raise Invalid(
            "Give the link a name of up to 200 characters.",
            errors={"name": ["Enter a name (up to 200 characters)."]},
        )
    return check_single_line(value.strip(), field="name", label="name")


def _slug(value: Any) -> str:
    if not isinstance(value, str) or not _SLUG.match(value):
        raise Invalid(
            "The link's address part is 3 to 80 lower-case letters, digits and dashes.",
            errors={"slug": ["Use 3-80 lower-case letters, digits and dashes, e.g. bo-intro."]},
        )
    return value


def _cleaned(data: dict[str, Any], *, partial: bool) -> dict[str, Any]:
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise Invalid(
            f"Unknown fields: {', '.join(unknown)}.",
            errors={k: ["Unknown field."] for k in unknown},
        )
    checks: dict[str, Any] = {
        "name": _name,
        "slug": _slug,
        "durations": _durations,
        "timezone": lambda v: zone(v).key,
        "availability": _availability,
        "buffer_before": lambda v: _int(v, "buffer_before", 0, MAX_BUFFER, multiple=UNIT),
        "buffer_after": lambda v: _int(v, "buffer_after", 0, MAX_BUFFER, multiple=UNIT),
        "min_notice_minutes": lambda v: _int(v, "min_notice_minutes", 0, MAX_NOTICE),
        "days_ahead": lambda v: _int(v, "days_ahead", 1, MAX_DAYS_AHEAD),
        "questions": _questions,
        "is_active": _bool,
    }
    if not partial and "name" not in data:
        raise Invalid("Give the link a name.", errors={"name": ["This field is required."]})
    return {key: checks[key](value) for key, value in data.items()}


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Invalid("is_active is true or false.", errors={"is_active": ["true or false."]})
    return value


def _slug_taken(slug: str) -> Invalid:
    return Invalid(
        f"The address /meet/{slug}/ is taken; choose another.",
        errors={"slug": ["This address is taken."]},
    )


def _free_slug(name: str) -> str:
    base = (slugify(name)[:60].strip("-") or "meet").ljust(3, "x")
    if not SchedulingLink.objects.filter(slug=base).exists():
        return base
    return f"{base}-{secrets.token_hex(3)}"


def link_create(*, owner: User, data: dict[str, Any]) -> SchedulingLink:
    cleaned = _cleaned(data, partial=False)
    cleaned.setdefault("slug", _free_slug(cleaned["name"]))
    if "timezone" not in cleaned:
        cleaned["timezone"] = getattr(owner, "timezone", "") or "UTC"
    link = SchedulingLink(account_id=owner.account_id, owner=owner, **cleaned)
    try:
        with transaction.atomic():
            if SchedulingLink.objects.filter(slug=link.slug).exists():
                raise _slug_taken(link.slug)
            link.save()
    except IntegrityError:
        raise _slug_taken(link.slug) from None
    return link


def link_update(*, link: SchedulingLink, data: dict[str, Any]) -> SchedulingLink:
    cleaned = _cleaned(data, partial=True)
    for key, value in cleaned.items():
        setattr(link, key, value)
    try:
        with transaction.atomic():
            if SchedulingLink.objects.filter(slug=link.slug).exclude(pk=link.pk).exists():
                raise _slug_taken(link.slug)
            link.save()
    except IntegrityError:
        raise _slug_taken(link.slug) from None
    return link


def link_delete(*, link: SchedulingLink, now: datetime | None = None) -> None:
    """The link and its bookings go. Its upcoming meetings are cancelled first, so the
    bookers get a cancellation and the calendar events go (the contacts' timelines
    keep what happened)."""
    from meetings.bookings import booking_cancel

    now = now or django_timezone.now()
    upcoming = link.bookings.filter(state=BookingState.CONFIRMED, end__gt=now)
    for booking in upcoming.select_related("link", "owner", "contact"):
        booking_cancel(
            booking=booking, by_owner=True, reason="The booking page was removed.", now=now
        )
    link.delete()
