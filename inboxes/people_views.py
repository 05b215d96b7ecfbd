"""Settings > Users (admins): create, deactivate and reactivate people, and release or
transfer the addresses a deactivated person still holds (R7)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from accounts import services
from accounts.forms import UserCreateForm, UserInviteForm
from accounts.models import User
from accounts.selectors import users_visible_to
from core.api import client_ip
from core.errors import DomainError
from core.web import admin_required, back_to, report
from inboxes import holds, releases
from inboxes import services as mailbox_services
from inboxes.holds import ToolHold
from inboxes.models import Mailbox, MailboxStatus
from inboxes.selectors import inboxes_visible_to, mailboxes_visible_to


@admin_required
def settings_users(request, form=None, status=200):
    users = list(users_visible_to(request.user).order_by("-is_active", "full_name", "email"))
    connected: dict[Any, list[Mailbox]] = {}
    for mailbox in (
        Mailbox.objects.filter(owner__in=users)
        .exclude(status=MailboxStatus.DISCONNECTED)
        .order_by("address")
    ):
        connected.setdefault(mailbox.owner_id, []).append(mailbox)
    return render(
        request,
        "accounts/settings_users.html",
        {
            "section": "users",
            "users": users,
            "rows": _user_rows(users, connected),
            "active_users": [u for u in users if u.is_active],
            "empty_inboxes": inboxes_visible_to(request.user).filter(mailbox__isnull=True),
            "form": form or UserCreateForm(),
            "invite_form": UserInviteForm(),
        },
        status=status,
    )


@dataclass(frozen=True)
class UserRow:
    """One line of Settings > Users: the user, their connected mailboxes (each with the
    tools using the same address, which go with it), and what they hold through a tool
    alone (the meetings tool on an address that is no mailbox of theirs)."""

    user: User
    mailboxes: list[tuple[Mailbox, list[str]]]
    tool_holds: list[ToolHold]


def _user_rows(users: list[User], connected: dict[Any, list[Mailbox]]) -> list[UserRow]:
    held = holds.tool_holds_of([u.pk for u in users])
    rows = []
    for u in users:
        mine = [hold for hold in held if hold.user_id == u.pk]
        mailboxes = connected.get(u.pk, [])
        addresses = {m.canonical_address for m in mailboxes}
        rows.append(
            UserRow(
                user=u,
                mailboxes=[
                    (m, [h.label for h in mine if h.canonical == m.canonical_address])
                    for m in mailboxes
                ],
                tool_holds=[h for h in mine if h.canonical not in addresses],
            )
        )
    return rows


@admin_required
@require_POST
def user_create(request):
    form = UserCreateForm(request.POST)
    if form.is_valid():
        try:
            user = services.user_create(
                actor=request.user,
                account=request.user.account,
                ip=client_ip(request),
                **form.cleaned_data,
            )
            messages.success(request, f"{user.email} can now log in.")
            return redirect("settings-users")
        except DomainError as exc:
            for field, errors in exc.extra.get("errors", {}).items():
                for error in errors:
                    form.add_error(field if field in form.fields else None, error)
            if not exc.extra.get("errors"):
                form.add_error(None, exc.detail)
    return settings_users(request, form=form, status=400)


@admin_required
@require_http_methods(["GET", "POST"])
def user_set_active(request, pk, active: bool):
    user = get_object_or_404(users_visible_to(request.user), pk=pk)
    if request.method == "GET":
        if active:
            return redirect("settings-users")
        # Deactivating asks first (a plain confirmation page).
        return render(
            request,
            "accounts/confirm.html",
            {
                "section": "users",
                "title": f"Deactivate {user.display_name}?",
                "body": f"{user.display_name} can no longer log in or use the API. Their "
                "mailboxes stay connected and their history stays until you release or "
                "transfer them. You can reactivate them later.",
                "button": "Deactivate",
                "cancel": "settings-users",
            },
        )
    try:
        if active:
            services.user_reactivate(actor=request.user, user=user, ip=client_ip(request))
            messages.success(request, f"{user.display_name} is active again.")
        else:
            services.user_deactivate(actor=request.user, user=user, ip=client_ip(request))
            messages.success(
                request,
                f"{user.display_name} is deactivated. Their mailboxes stay connected until "
                "you release or transfer them.",
            )
    except DomainError as exc:
        report(request, exc)
    return redirect("settings-users")


@admin_required
@require_POST
def mailbox_release(request, pk):
    mailbox = get_object_or_404(mailboxes_visible_to(request.user), pk=pk)
    try:
        mailbox_services.mailbox_release(actor=request.user, mailbox=mailbox, ip=client_ip(request))
        messages.success(request, f"{mailbox.address} is released and can be connected again.")
    except DomainError as exc:
        report(request, exc)
    return back_to(request, "settings-users")


@admin_required
@require_POST
def mailbox_transfer(request, pk):
    mailbox = get_object_or_404(mailboxes_visible_to(request.user), pk=pk)
    target = request.POST.get("target", "")
    kind, _, target_id = target.partition(":")
    try:
        if kind == "user":
            to_user = get_object_or_404(users_visible_to(request.user), pk=target_id)
            mailbox_services.mailbox_transfer(
                actor=request.user, mailbox=mailbox, to_user=to_user, ip=client_ip(request)
            )
            messages.success(request, f"{mailbox.address} now belongs to {to_user.display_name}.")
        elif kind == "inbox":
            inbox = get_object_or_404(inboxes_visible_to(request.user), pk=target_id)
            mailbox_services.mailbox_transfer(
                actor=request.user,
                mailbox=mailbox,
                inbox=inbox,
                ip=client_ip(request),
                acknowledge_team_visibility=request.POST.get("acknowledge_team_visibility") == "on",
            )
            messages.success(request, f"{mailbox.address} is now the team email of {inbox.name}.")
        else:
            messages.error(request, "Choose a user or an inbox to transfer to.")
    except DomainError as exc:
        report(request, exc)
    return redirect("settings-users")


@admin_required
@require_POST
def user_address_release(request, pk):
    """R7 for an address a deactivated user holds through a tool only (no mailbox)."""
    user = get_object_or_404(users_visible_to(request.user), pk=pk)
    address = request.POST.get("address", "")
    try:
        releases.user_address_release(
            actor=request.user, user=user, address=address, ip=client_ip(request)
        )
        messages.success(request, f"{address} is released and can be connected again.")
    except DomainError as exc:
        report(request, exc)
    return back_to(request, "settings-users")
