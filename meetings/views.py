"""Settings > Meetings: the meetings connection, scheduling links and upcoming bookings.

Thin views: a form turns posted text into the services' input, the services decide
(R1/R4 refusals, link validation, cancelling). Every destructive action asks first
the one way (core/confirm.py, meetings/confirmations.py): a dialog with JavaScript, a
page without, and it acts only on a POST that carries ``confirm=yes``.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse, HttpResponseBase
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone

from accounts.auth import AuthenticatedHttpRequest
from core.api import client_ip
from core.confirm import ask_first
from core.errors import DomainError, Invalid
from core.web import report
from inboxes.models import Mailbox
from inboxes.selectors import own_connected_mailboxes
from meetings import bookings, confirmations, links, services
from meetings.calendars.consent import CONSENT_PROVIDER
from meetings.forms import LinkForm, MeetingsConnectForm
from meetings.models import (
    Booking,
    BookingState,
    CalendarKind,
    CalendarStatus,
    MeetingsConnection,
    SchedulingLink,
)


def _own_mailboxes(user: Any) -> list[Mailbox]:
    """The user's own connected personal mailboxes: what the meetings tool may book from."""
    return list(own_connected_mailboxes(user))


def _foreign_mailbox(user: Any, mailboxes: list[Mailbox], posted: str) -> list[Mailbox]:
    """The posted mailbox of the user's account when it is not one of their own (a team
    email, a colleague's): the service refuses it with the reason (R4, R1)."""
    if any(str(m.pk) == posted for m in mailboxes):
        return []
    try:
        other = Mailbox.objects.filter(account_id=user.account_id, pk=uuid.UUID(posted)).first()
    except ValueError:  # not an id at all: the form says it is not one of the choices
        return []
    return [other] if other is not None else []


def _user_zone(user: Any) -> str:
    """The zone a new link starts in: the user's latest link's, else UTC."""
    latest = SchedulingLink.objects.filter(owner=user).order_by("-created_at").first()
    return latest.timezone if latest else "UTC"


def public_url(link: SchedulingLink) -> str:
    return f"{settings.PUBLIC_URL}/meet/{link.slug}/"


def _consent_url(connection: MeetingsConnection | None) -> str | None:
    """h-mcal's incremental consent for the connection's calendar, when it is needed."""
    if connection is None or connection.calendar_status != CalendarStatus.NEEDS_CONSENT:
        return None
    provider = CONSENT_PROVIDER.get(CalendarKind(connection.calendar))
    return reverse("meetings-calendar-consent", args=[provider]) if provider else None


def _invalid_to_connect_form(form: MeetingsConnectForm, exc: Invalid) -> None:
    """A refusal of the service onto the fields it concerns (CalDAV's are nested)."""
    errors = exc.extra.get("errors") or {}
    nested = errors.get("caldav")
    caldav: dict[str, Any] = nested if isinstance(nested, dict) else {}
    for name, problems in caldav.items():
        form.add_error(f"caldav_{name}" if f"caldav_{name}" in form.fields else None, problems)
    for name, problems in errors.items():
        if name == "caldav":
            continue
        field = {"address": "mailbox"}.get(name, name)
        form.add_error(field if field in form.fields else None, problems)
    if not form.errors:
        form.add_error(None, exc.detail)


def _page(
    request: AuthenticatedHttpRequest,
    form: MeetingsConnectForm | None = None,
    error: DomainError | None = None,
    status: int = 200,
) -> HttpResponse:
    user = request.user
    connection = MeetingsConnection.objects.filter(user=user).first()
    mailboxes = _own_mailboxes(user)
    if form is None:
        initial: dict[str, Any] = {}
        if connection is not None:
            match = next(
                (
                    m
                    for m in mailboxes
                    if m.pk == connection.mailbox_id
                    or m.canonical_address == connection.canonical_address
                ),
                None,
            )
            initial = {
                "mailbox": str(match.pk) if match else "",
                "calendar": connection.calendar,
                "caldav_url": connection.caldav_url,
                "caldav_username": connection.caldav_username,
            }
        form = MeetingsConnectForm(initial=initial, mailboxes=mailboxes)
    user_links = list(SchedulingLink.objects.filter(owner=user).order_by("name", "created_at"))
    upcoming = (
        Booking.objects.filter(owner=user, state=BookingState.CONFIRMED, end__gte=timezone.now())
        .select_related("link")
        .order_by("start")[:50]
    )
    return render(
        request,
        "meetings/settings.html",
        {
            "section": "meetings",
            "connection": connection,
            "form": form,
            "has_mailboxes": bool(mailboxes),
            "error": error,
            "links": [(link, public_url(link)) for link in user_links],
            "upcoming": upcoming,
            "consent_url": _consent_url(connection),
        },
        status=status,
    )


@login_required
def settings_meetings(request: AuthenticatedHttpRequest) -> HttpResponse:
    if request.method != "POST":
        return _page(request)
    mailboxes = _own_mailboxes(request.user)
    also = _foreign_mailbox(request.user, mailboxes, request.POST.get("mailbox", ""))
    form = MeetingsConnectForm(request.POST, mailboxes=mailboxes, also=also)
    valid = form.is_valid()
    form.offer(mailboxes)  # shown again, the select lists only the user's own
    if not valid:
        return _page(request, form=form, status=400)
    data = form.cleaned_data
    caldav = None
    if data["calendar"] == "caldav":
        caldav = services.CaldavInput(
            url=data["caldav_url"],
            username=data["caldav_username"],
            password=data["caldav_password"],
        )
    try:
        services.meetings_connect(
            user=request.user,
            address=data["mailbox_obj"].address,
            calendar=data["calendar"],
            caldav=caldav,
            ip=client_ip(request),
        )
    except Invalid as exc:
        _invalid_to_connect_form(form, exc)
        return _page(request, form=form, status=exc.status)
    except DomainError as exc:
        return _page(request, form=form, error=exc, status=exc.status)
    messages.success(request, f"The meetings tool books from {data['mailbox_obj'].address}.")
    return redirect("settings-meetings")


@login_required
def meetings_remove(request: AuthenticatedHttpRequest) -> HttpResponseBase:
    """Asks first (core/confirm.py); a POST with ``confirm`` removes the connection."""
    connection = MeetingsConnection.objects.filter(user=request.user).first()
    if connection is None:
        messages.info(request, "You have no meetings connection.")
        return redirect("settings-meetings")
    asked = ask_first(request, confirmations.remove_question(connection))
    if asked is not None:
        return asked
    services.meetings_disconnect(user=request.user, ip=client_ip(request))
    messages.success(request, "Your meetings connection is removed.")
    return redirect("settings-meetings")


def _invalid_to_form(form: LinkForm, exc: Invalid) -> None:
    errors = exc.extra.get("errors") or {}
    placed = False
    for name, problems in errors.items():
        field = name if name in form.fields else None
        if name == "availability":
            field = None
        for problem in problems if isinstance(problems, list) else [str(problems)]:
            form.add_error(field, str(problem))
            placed = True
    if not placed:
        form.add_error(None, exc.detail)


def _link_form_page(
    request: AuthenticatedHttpRequest,
    form: LinkForm,
    link: SchedulingLink | None,
    status: int = 200,
) -> HttpResponse:
    return render(
        request,
        "meetings/link_form.html",
        {
            "section": "meetings",
            "form": form,
            "link": link,
            "public_url": public_url(link) if link else None,
            "public_base": f"{settings.PUBLIC_URL}/meet/",
        },
        status=status,
    )


@login_required
def link_create(request: AuthenticatedHttpRequest) -> HttpResponse:
    if request.method != "POST":
        return _link_form_page(request, LinkForm.blank(timezone=_user_zone(request.user)), None)
    form = LinkForm(request.POST)
    if form.is_valid():
        try:
            link = links.link_create(owner=request.user, data=form.link_data())
        except Invalid as exc:
            _invalid_to_form(form, exc)
        except DomainError as exc:
            form.add_error(None, exc.detail)
        else:
            messages.success(request, f"“{link.name}” is ready: share {public_url(link)}")
            return redirect("settings-meetings")
    return _link_form_page(request, form, None, status=400)


@login_required
def link_edit(request: AuthenticatedHttpRequest, pk: Any) -> HttpResponse:
    link = get_object_or_404(SchedulingLink, pk=pk, owner=request.user)
    if request.method != "POST":
        return _link_form_page(request, LinkForm.for_link(link), link)
    form = LinkForm(request.POST)
    if form.is_valid():
        try:
            link = links.link_update(link=link, data=form.link_data())
        except Invalid as exc:
            _invalid_to_form(form, exc)
        except DomainError as exc:
            form.add_error(None, exc.detail)
        else:
            messages.success(request, f"“{link.name}” is saved.")
            return redirect("settings-meetings")
    return _link_form_page(request, form, link, status=400)


@login_required
def link_delete(request: AuthenticatedHttpRequest, pk: Any) -> HttpResponseBase:
    link = get_object_or_404(SchedulingLink, pk=pk, owner=request.user)
    asked = ask_first(request, confirmations.link_delete_question(link))
    if asked is not None:
        return asked
    name = link.name
    try:
        links.link_delete(link=link)
    except DomainError as exc:
        report(request, exc)
    else:
        messages.success(request, f"“{name}” is deleted; its page no longer takes bookings.")
    return redirect("settings-meetings")


@login_required
def booking_cancel(request: AuthenticatedHttpRequest, pk: Any) -> HttpResponseBase:
    """The owner cancels a booking: asks first (core/confirm.py), a POST with
    ``confirm`` cancels it and the booker is told."""
    booking = get_object_or_404(Booking.objects.select_related("link"), pk=pk, owner=request.user)
    if booking.state != BookingState.CONFIRMED:
        messages.info(request, f"The meeting with {booking.name} is already cancelled.")
        return redirect("settings-meetings")
    asked = ask_first(request, confirmations.booking_cancel_question(booking))
    if asked is not None:
        return asked
    try:
        bookings.booking_cancel(
            booking=booking, by_owner=True, reason=request.POST.get("reason", "")[:500]
        )
    except DomainError as exc:
        report(request, exc)
    else:
        messages.success(request, f"The meeting with {booking.name} is cancelled; they are told.")
    return redirect("settings-meetings")
