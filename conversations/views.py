"""Settings > Inboxes (admins): inboxes, their team email, the from-name."""

from __future__ import annotations

from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from conversations import services
from conversations.forms import InboxCreateForm, InboxSettingsForm
from core.api import client_ip
from core.errors import DomainError
from core.web import admin_required, report
from inboxes import server_prefill
from inboxes import services as mailbox_services
from inboxes.forms import TeamMailboxConnectForm
from inboxes.history import backfill_select_context
from inboxes.models import MailboxKind
from inboxes.oauth_connect import allow_sign_in_forms, connect_options
from inboxes.selectors import inbox_plan_usage, inboxes_visible_to
from inboxes.throttling import failed_connection_tests_limited


def _inboxes_page(
    request, *, team_form=None, team_inbox=None, error=None, status=200, prefill_note=""
):
    inboxes = inboxes_visible_to(request.user).order_by("name")
    used, limit = inbox_plan_usage(request.user.account)
    page = render(
        request,
        "conversations/settings_inboxes.html",
        {
            "section": "inboxes",
            "inboxes": inboxes,
            "create_form": InboxCreateForm(),
            "team_form": team_form,
            "blank_team_form": TeamMailboxConnectForm(),
            "connect_options": connect_options(),
            **backfill_select_context(),
            "team_inbox": team_inbox,
            "error": error,
            "prefill_note": prefill_note,
            "plan": {"used": used, "limit": limit, "name": request.user.account.get_plan_display()},
        },
        status=status,
    )
    return allow_sign_in_forms(page)


@admin_required
def settings_inboxes(request):
    return _inboxes_page(request)


@admin_required
@require_POST
def inbox_settings(request, pk):
    inbox = get_object_or_404(inboxes_visible_to(request.user), pk=pk)
    form = InboxSettingsForm(request.POST)
    if form.is_valid():
        try:
            services.inbox_update(
                actor=request.user,
                inbox=inbox,
                from_name=form.cleaned_data["from_name"],
                ip=client_ip(request),
            )
            messages.success(request, f"Inbox {inbox.name}: from-name saved.")
        except DomainError as exc:
            report(request, exc)
    return redirect("settings-inboxes")


@admin_required
@require_POST
def inbox_delete(request, pk):
    inbox = get_object_or_404(inboxes_visible_to(request.user), pk=pk)
    try:
        services.inbox_delete(actor=request.user, inbox=inbox, ip=client_ip(request))
        messages.success(request, f"Inbox {inbox.name} is deleted.")
    except DomainError as exc:
        report(request, exc)
    return redirect("settings-inboxes")


@admin_required
@require_POST
def inbox_connect_team_email(request, pk):
    inbox = get_object_or_404(inboxes_visible_to(request.user), pk=pk)
    if server_prefill.wants_fill(request):
        filled, note = server_prefill.prefilled_form(TeamMailboxConnectForm, request.POST)
        return _inboxes_page(request, team_form=filled, team_inbox=inbox, prefill_note=note)
    form = TeamMailboxConnectForm(request.POST)
    if not form.is_valid():
        return _inboxes_page(request, team_form=form, team_inbox=inbox, status=400)
    imap, smtp = form.servers()
    try:
        with failed_connection_tests_limited(request):
            mailbox = mailbox_services.mailbox_connect(
                actor=request.user,
                address=form.cleaned_data["address"],
                kind=MailboxKind.TEAM,
                imap=imap,
                smtp=smtp,
                inbox=inbox,
                ip=client_ip(request),
                acknowledge_team_visibility=form.cleaned_data["acknowledge_team_visibility"],
                backfill_days=form.cleaned_data["backfill_days"],
            )
    except DomainError as exc:
        return _inboxes_page(
            request, team_form=form, team_inbox=inbox, error=exc, status=exc.status
        )
    messages.success(request, f"{mailbox.address} is now the team email of inbox {inbox.name}.")
    return redirect("settings-inboxes")
