"""The bell, the notifications page and the notification settings page."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import path, reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from accounts.auth import AuthenticatedHttpRequest
from accounts.models import User
from notifications.models import Kind, Notification
from notifications.services import (
    notification_read,
    notifications_read_all,
    settings_for,
    settings_update,
)


def poll() -> str:
    """How often the bell asks for its count (htmx trigger)."""
    return f"every {settings.NOTIFICATION_POLL_SECONDS}s"


def unread_count(user: User) -> int:
    return Notification.objects.filter(user=user, in_app=True, read_at__isnull=True).count()


@login_required
def bell(request: AuthenticatedHttpRequest) -> HttpResponse:
    """The bell's count, polled by htmx on every page (no reload)."""
    return render(
        request, "notifications/_bell.html", {"unread": unread_count(request.user), "poll": poll()}
    )


@login_required
def notifications_page(request: AuthenticatedHttpRequest) -> HttpResponse:
    found = Notification.objects.filter(user=request.user, in_app=True)
    if request.GET.get("show") == "unread":
        found = found.filter(read_at__isnull=True)
    page = Paginator(found.order_by("-created_at", "-id"), 50).get_page(request.GET.get("page"))
    return render(
        request,
        "notifications/list.html",
        {
            "section": "notifications",
            "page": page,
            "show": request.GET.get("show", "all"),
            "unread": unread_count(request.user),
        },
    )


@login_required
@require_POST
def notification_open(request: AuthenticatedHttpRequest, pk: str) -> HttpResponse:
    """Mark read and go to what it is about."""
    try:
        notification = notification_read(user=request.user, notification_id=pk)
    except Notification.DoesNotExist:
        raise Http404 from None
    target = notification.url
    if not target or not url_has_allowed_host_and_scheme(target, allowed_hosts=None):
        target = reverse("notifications")
    return redirect(target)


@login_required
@require_POST
def notification_mark_read(request: AuthenticatedHttpRequest, pk: str) -> HttpResponse:
    try:
        notification_read(user=request.user, notification_id=pk)
    except Notification.DoesNotExist:
        raise Http404 from None
    return redirect(reverse("notifications"))


@login_required
@require_POST
def notifications_mark_all_read(request: AuthenticatedHttpRequest) -> HttpResponse:
    marked = notifications_read_all(user=request.user)
    messages.success(request, f"Marked {marked} notification(s) as read.")
    return redirect(reverse("notifications"))


@login_required
def notification_settings_page(request: AuthenticatedHttpRequest) -> HttpResponse:
    user = request.user
    if request.method == "POST":
        changes = {
            kind: {
                "in_app": request.POST.get(f"{kind}-in_app") == "on",
                "email": request.POST.get(f"{kind}-email") == "on",
            }
            for kind in Kind.values
        }
        settings_update(user=user, changes=changes)
        messages.success(request, "Notification settings saved.")
        return redirect(reverse("settings-notifications"))
    chosen = settings_for(user)
    rows = [{"kind": kind, "label": label, **chosen[kind]} for kind, label in Kind.choices]
    return render(
        request,
        "notifications/settings.html",
        {"section": "notifications", "rows": rows},
    )


urlpatterns = [
    path("notifications/", notifications_page, name="notifications"),
    path("notifications/bell/", bell, name="notifications-bell"),
    path("notifications/read-all/", notifications_mark_all_read, name="notifications-read-all"),
    path("notifications/<uuid:pk>/open/", notification_open, name="notification-open"),
    path("notifications/<uuid:pk>/read/", notification_mark_read, name="notification-read"),
    path("settings/notifications/", notification_settings_page, name="settings-notifications"),
]
