"""The public booking pages (no login): /meet/<slug>/ and a booking's own pages.

They work without JavaScript: the duration, the visitor's time zone, the week, the
day and the chosen time are query parameters of plain links and GET forms; booking,
cancelling and rescheduling are POSTs. A booking's cancel and reschedule links (in the
invitation email) open a page that shows the booking and a form: mail scanners follow
links, so only the form's POST acts. Like the public API, the pages are throttled per
IP against slot-scraping and spam bookings.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django_ratelimit.core import get_usage

from core.errors import DomainError, Invalid
from core.middleware import note_retry_after
from meetings import bookings, slots
from meetings.errors import SlotUnavailable
from meetings.forms import BookingForm, zone_choices
from meetings.ics import REQUEST, ics_text
from meetings.invitations import invite_of
from meetings.models import Booking, BookingState, MeetingsConnection, SchedulingLink

WEEK = 7


# --- Throttling ------------------------------------------------------------------------


def _throttled(request: HttpRequest, group: str, rate: str) -> int | None:
    """Seconds to wait when this IP is over ``rate`` for ``group``, else None (counts it)."""
    try:
        usage = get_usage(request, group=group, key="ip", rate=rate, increment=True)
    except (ImproperlyConfigured, ValueError):  # no client address: one shared count
        usage = get_usage(
            request, group=group, key=lambda _g, _r: "no-address", rate=rate, increment=True
        )
    if usage and usage["should_limit"]:
        return max(1, int(usage["time_left"]))
    return None


def _too_many(request: HttpRequest, wait: int, link: SchedulingLink | None) -> HttpResponse:
    note_retry_after(request, wait)
    minutes = max(1, round(wait / 60))
    return render(
        request,
        "meetings/public_throttled.html",
        {"link": link, "wait": wait, "minutes": minutes},
        status=429,
    )


# The same limits as the public API (settings MEETINGS_SLOTS_RATE, MEETINGS_BOOKINGS_RATE):
# each page of free times counts as a slots request, each booking, cancel or reschedule
# as a booking. django-ratelimit reads DRF's "10/hour" rate strings too.
def _page_rate() -> str:
    return str(settings.MEETINGS_SLOTS_RATE)


def _booking_rate() -> str:
    return str(settings.MEETINGS_BOOKINGS_RATE)


# --- Reading the query -----------------------------------------------------------------


def _zone(name: str | None) -> ZoneInfo:
    if name and name in {value for value, _label in zone_choices()}:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return ZoneInfo("UTC")


def _date(text: str | None) -> date | None:
    try:
        return date.fromisoformat(text) if text else None
    except ValueError:
        return None


def _moment(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace(" ", "+").replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return moment.astimezone(UTC)


def _duration(link: SchedulingLink, text: str | None) -> int:
    offered = [int(d) for d in link.durations] or [30]
    try:
        value = int(text or "")
    except ValueError:
        return offered[0]
    return value if value in offered else offered[0]


def _bookable_link(slug: str) -> SchedulingLink | None:
    """An active link whose owner is active and has a meetings connection."""
    link = (
        SchedulingLink.objects.filter(slug=slug, is_active=True, owner__is_active=True)
        .select_related("owner")
        .first()
    )
    if link is None or not MeetingsConnection.objects.filter(user_id=link.owner_id).exists():
        return None
    return link


def _not_found(request: HttpRequest) -> HttpResponse:
    return render(request, "meetings/public_404.html", status=404)


# --- Labels in the visitor's zone ------------------------------------------------------


def day_label(day: date) -> str:
    return f"{day:%a} {day.day} {day:%b}"


def time_label(moment: datetime, tz: ZoneInfo) -> str:
    return f"{moment.astimezone(tz):%H:%M}"


def when_label(start: datetime, end: datetime, tz: ZoneInfo) -> str:
    local = start.astimezone(tz)
    return (
        f"{local:%A} {local.day} {local:%B %Y}, {time_label(start, tz)}–{time_label(end, tz)}"
        f" ({tz.key.replace('_', ' ')})"
    )


# --- The slot picker (shared by the booking page and the reschedule page) --------------


def _picker(
    request: HttpRequest,
    link: SchedulingLink,
    *,
    base: str,
    tz: ZoneInfo,
    duration: int,
    fixed: dict[str, str] | None = None,
    ignore_booking_id: Any = None,
) -> dict[str, Any]:
    """Days of one week with their free slots, as links with query parameters."""
    now = timezone.now()
    today = now.astimezone(tz).date()
    last = today + timedelta(days=link.days_ahead)
    asked_week = _date(request.GET.get("week"))
    week = min(max(asked_week or today, today), last)

    def free(first: date) -> list[slots.Slot]:
        return slots.free_slots(
            link,
            start=first,
            days=WEEK,
            tz=tz,
            duration=duration,
            now=now,
            ignore_booking_id=ignore_booking_id,
        )

    found = free(week)
    if asked_week is None and not found:
        # The first visit lands on the first week that has a free time.
        probe = week + timedelta(days=WEEK)
        while probe <= last and not found:
            found = free(probe)
            week = probe if found else week
            probe += timedelta(days=WEEK)
    by_day: dict[date, list[slots.Slot]] = {}
    for slot in found:
        by_day.setdefault(slot.start.astimezone(tz).date(), []).append(slot)
    keep = {"duration": str(duration), "tz": tz.key, **(fixed or {})}

    def url(**params: Any) -> str:
        return f"{base}?{urlencode({**keep, **{k: v for k, v in params.items() if v}})}"

    chosen_day = _date(request.GET.get("day"))
    if chosen_day not in by_day:
        chosen_day = min(by_day) if by_day else None
    days = []
    for offset in range(WEEK):
        day = week + timedelta(days=offset)
        if day > last:
            break
        count = len(by_day.get(day, []))
        days.append(
            {
                "label": day_label(day),
                "weekday": f"{day:%a}",
                "number": day.day,
                "month": f"{day:%b}",
                "iso": day.isoformat(),
                "count": count,
                "chosen": day == chosen_day,
                "url": url(week=week.isoformat(), day=day.isoformat()) if count else "",
            }
        )
    day_slots = [
        {
            "label": time_label(slot.start, tz),
            "start": slot.start.isoformat(),
            "url": url(
                week=week.isoformat(),
                day=chosen_day.isoformat() if chosen_day else "",
                start=slot.start.isoformat(),
            ),
        }
        for slot in (by_day.get(chosen_day, []) if chosen_day else [])
    ]
    previous = week - timedelta(days=WEEK)
    return {
        "days": days,
        "chosen_day": day_label(chosen_day) if chosen_day else "",
        "day_slots": day_slots,
        "found": found,
        "week_label": f"{day_label(week)} – {day_label(min(week + timedelta(days=WEEK - 1), last))}",
        "prev_url": url(week=max(previous, today).isoformat()) if week > today else "",
        "next_url": url(week=(week + timedelta(days=WEEK)).isoformat())
        if week + timedelta(days=WEEK) <= last
        else "",
        "durations": [
            {
                "minutes": d,
                "chosen": d == duration,
                "url": f"{base}?{urlencode({'duration': d, 'tz': tz.key})}",
            }
            for d in link.durations
        ],
        "zone_form": {
            "action": base,
            "hidden": {k: v for k, v in keep.items() if k != "tz"},
            # Only a GET without a zone lets the script switch to the browser's zone.
            "detect": request.method == "GET" and "tz" not in request.GET,
        },
    }


def _alternatives(items: Iterable[slots.Slot], tz: ZoneInfo, url_of: Any) -> list[dict[str, str]]:
    return [
        {
            "label": f"{day_label(slot.start.astimezone(tz).date())}, {time_label(slot.start, tz)}",
            "url": url_of(slot),
        }
        for slot in list(items)[:6]
    ]


# --- /meet/<slug>/ ---------------------------------------------------------------------


def _booking_page(
    request: HttpRequest,
    link: SchedulingLink,
    *,
    tz: ZoneInfo,
    duration: int,
    form: BookingForm | None = None,
    start: datetime | None = None,
    taken: list[dict[str, str]] | None = None,
    status: int = 200,
) -> HttpResponse:
    base = reverse("meet", args=[link.slug])
    picker = _picker(request, link, base=base, tz=tz, duration=duration)
    chosen = None
    if start is not None and taken is None:
        offered = {slot.start for slot in picker["found"]}
        if start in offered or form is not None:
            chosen = {
                "start": start.isoformat(),
                "label": when_label(start, start + timedelta(minutes=duration), tz),
                "back": f"{base}?{urlencode({'duration': duration, 'tz': tz.key})}",
            }
        else:
            # The time left the list (booked meanwhile, or no longer offered).
            taken = _nearby(picker["found"], start, tz, base, duration)
            status = 409 if status == 200 else status
    return render(
        request,
        "meetings/public_link.html",
        {
            "link": link,
            "owner_name": link.owner.display_name,
            "tz": tz.key,
            "duration": duration,
            "zones": zone_choices(),
            "picker": picker,
            "chosen": chosen,
            "form": form or BookingForm(questions=link.questions),
            "taken": taken,
        },
        status=status,
    )


def _nearby(
    found: list[slots.Slot], start: datetime, tz: ZoneInfo, base: str, duration: int
) -> list[dict[str, str]]:
    ordered = sorted(found, key=lambda slot: abs((slot.start - start).total_seconds()))
    return _alternatives(
        sorted(ordered[:6], key=lambda slot: slot.start),
        tz,
        lambda slot: (
            f"{base}?{urlencode({'duration': duration, 'tz': tz.key, 'week': slot.start.astimezone(tz).date().isoformat(), 'day': slot.start.astimezone(tz).date().isoformat(), 'start': slot.start.isoformat()})}"
        ),
    )


def meet(request: HttpRequest, slug: str) -> HttpResponseBase:
    link = _bookable_link(slug)
    if link is None:
        return _not_found(request)
    source = request.POST if request.method == "POST" else request.GET
    tz = _zone(source.get("tz"))
    duration = _duration(link, source.get("duration"))
    if request.method != "POST":
        wait = _throttled(request, "meetings-page", _page_rate())
        if wait:
            return _too_many(request, wait, link)
        return _booking_page(
            request, link, tz=tz, duration=duration, start=_moment(request.GET.get("start"))
        )
    wait = _throttled(request, "meetings-booking", _booking_rate())
    if wait:
        return _too_many(request, wait, link)
    start = _moment(request.POST.get("start"))
    form = BookingForm(request.POST, questions=link.questions)
    if start is None:
        return redirect(f"{reverse('meet', args=[link.slug])}?{urlencode({'tz': tz.key})}")
    if not form.is_valid():
        return _booking_page(
            request, link, tz=tz, duration=duration, form=form, start=start, status=400
        )
    try:
        booking = bookings.booking_create(
            link=link,
            start=start,
            duration=duration,
            name=form.cleaned_data["name"],
            email=form.cleaned_data["email"],
            answers=form.answers(),
            timezone=tz.key,
        )
    except SlotUnavailable as exc:
        base = reverse("meet", args=[link.slug])
        taken = _alternatives(
            exc.alternatives,
            tz,
            lambda slot: (
                f"{base}?{urlencode({'duration': duration, 'tz': tz.key, 'week': slot.start.astimezone(tz).date().isoformat(), 'day': slot.start.astimezone(tz).date().isoformat(), 'start': slot.start.isoformat()})}"
            ),
        )
        return _booking_page(request, link, tz=tz, duration=duration, taken=taken, status=409)
    except Invalid as exc:
        for name, problems in (exc.extra.get("errors") or {}).items():
            for problem in problems if isinstance(problems, list) else [str(problems)]:
                form.add_error(name if name in form.fields else None, str(problem))
        if not form.errors:
            form.add_error(None, exc.detail)
        return _booking_page(
            request, link, tz=tz, duration=duration, form=form, start=start, status=400
        )
    except DomainError as exc:
        form.add_error(None, exc.detail)
        return _booking_page(
            request, link, tz=tz, duration=duration, form=form, start=start, status=exc.status
        )
    return redirect("meet-booking", token=booking.token)


# --- A booking's own pages -------------------------------------------------------------


def _booking_or_404(token: str) -> Booking | None:
    booking = bookings.booking_by_token(token)
    return booking


def _booking_context(booking: Booking) -> dict[str, Any]:
    tz = _zone(booking.timezone)
    return {
        "booking": booking,
        "link": booking.link,
        "owner_name": booking.owner.display_name,
        "when": when_label(booking.start, booking.end, tz),
        "cancelled": booking.state == BookingState.CANCELLED,
        "duration": int((booking.end - booking.start).total_seconds() // 60),
    }


def booking_done(request: HttpRequest, token: str) -> HttpResponse:
    booking = _booking_or_404(token)
    if booking is None:
        return _not_found(request)
    return render(request, "meetings/public_booked.html", _booking_context(booking))


def booking_ics(request: HttpRequest, token: str) -> HttpResponse:
    """The booking as an .ics file, for "Add to your calendar" (the email has it too)."""
    booking = _booking_or_404(token)
    if booking is None or booking.state != BookingState.CONFIRMED:
        return _not_found(request)
    connection = MeetingsConnection.objects.filter(user_id=booking.owner_id).first()
    body = ics_text(invite_of(booking, connection), method=REQUEST)
    response = HttpResponse(body, content_type="text/calendar; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="invite.ics"'
    return response


def booking_cancel(request: HttpRequest, token: str) -> HttpResponseBase:
    """GET: the booking and a form (a mail scanner's GET changes nothing); POST cancels."""
    booking = _booking_or_404(token)
    if booking is None:
        return _not_found(request)
    if request.method == "POST" and booking.state == BookingState.CONFIRMED:
        wait = _throttled(request, "meetings-booking", _booking_rate())
        if wait:
            return _too_many(request, wait, booking.link)
        try:
            bookings.booking_cancel(
                booking=booking, by_owner=False, reason=request.POST.get("reason", "")[:500]
            )
        except DomainError as exc:
            context = {**_booking_context(booking), "error": exc.detail}
            return render(request, "meetings/public_cancel.html", context, status=exc.status)
        return redirect("meet-booking-cancel", token=token)
    return render(request, "meetings/public_cancel.html", _booking_context(booking))


def booking_reschedule(request: HttpRequest, token: str) -> HttpResponseBase:
    """GET: the booking and free times to move it to; POST with ``start`` moves it."""
    booking = _booking_or_404(token)
    if booking is None:
        return _not_found(request)
    context = _booking_context(booking)
    if booking.state != BookingState.CONFIRMED:
        return render(request, "meetings/public_reschedule.html", context)
    source = request.POST if request.method == "POST" else request.GET
    tz = _zone(source.get("tz") or booking.timezone)
    duration = context["duration"]
    base = reverse("meet-booking-reschedule", args=[token])
    taken = None
    status = 200
    if request.method == "POST":
        wait = _throttled(request, "meetings-booking", _booking_rate())
        if wait:
            return _too_many(request, wait, booking.link)
        start = _moment(request.POST.get("start"))
        if start is not None:
            try:
                bookings.booking_reschedule(booking=booking, start=start)
            except SlotUnavailable as exc:
                taken = _alternatives(
                    exc.alternatives,
                    tz,
                    lambda slot: (
                        f"{base}?{urlencode({'tz': tz.key, 'week': slot.start.astimezone(tz).date().isoformat(), 'day': slot.start.astimezone(tz).date().isoformat(), 'start': slot.start.isoformat()})}"
                    ),
                )
                status = 409
            except DomainError as exc:
                context["error"] = exc.detail
                status = exc.status
            else:
                return redirect("meet-booking", token=token)
    else:
        wait = _throttled(request, "meetings-page", _page_rate())
        if wait:
            return _too_many(request, wait, booking.link)
    picker = _picker(
        request, booking.link, base=base, tz=tz, duration=duration, ignore_booking_id=booking.pk
    )
    picker["durations"] = []
    chosen = None
    start = _moment(request.GET.get("start")) if request.method != "POST" else None
    if start is not None:
        if start in {slot.start for slot in picker["found"]}:
            chosen = {
                "start": start.isoformat(),
                "label": when_label(start, start + timedelta(minutes=duration), tz),
                "back": f"{base}?{urlencode({'tz': tz.key})}",
            }
        else:
            taken = _nearby(picker["found"], start, tz, base, duration)
            status = 409
    return render(
        request,
        "meetings/public_reschedule.html",
        {
            **context,
            "tz": tz.key,
            "zones": zone_choices(),
            "picker": picker,
            "chosen": chosen,
            "taken": taken,
        },
        status=status,
    )
