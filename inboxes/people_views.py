"""Settings > Users (admins): create, deactivate and reactivate people, and release or
transfer the addresses a deactivated person still holds (R7)."""

from __future__ import annotations

from django.contrib import messages
from django.db.models import Prefetch
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from accounts import services
from accounts.forms import UserCreateForm
from accounts.selectors import users_visible_to
from core.api import client_ip
from core.errors import DomainError
from core.web import admin_required, back_to, report
from inboxes import services as mailbox_services
from inboxes.models import Mailbox, MailboxStatus
from inboxes.selectors import inboxes_visible_to, mailboxes_visible_to


@admin_required
def settings_users(request, form=None, status=200):
    connected = Mailbox.objects.exclude(status=MailboxStatus.DISCONNECTED).order_by("address")
    users = (
        users_visible_to(request.user)
        .prefetch_related(Prefetch("mailboxes", queryset=connected, to_attr="connected_mailboxes"))
        .order_by("-is_active", "full_name", "email")
    )
    return render(
        request,
        "accounts/settings_users.html",
        {
            "section": "users",
            "users": users,
            "active_users": [u for u in users if u.is_active],
            "empty_inboxes": inboxes_visible_to(request.user).filter(mailbox__isnull=True),
            "form": form or UserCreateForm(),
        },
        status=status,
    )


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
@require_POST
def user_set_active(request, pk, active: bool):
    user = get_object_or_404(users_visible_to(request.user), pk=pk)
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
