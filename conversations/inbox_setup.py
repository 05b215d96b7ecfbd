"""Settings > Inboxes > Create an inbox, as consecutive steps: 1 name, 2 team email,
3 routing, 4 done. Each step is a page of its own (works without JavaScript), calls
the same services as the rest of Settings > Inboxes, and leads to the next."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path
from django.views.decorators.http import require_http_methods

from accounts.auth import AuthenticatedHttpRequest
from accounts.selectors import teams_with_members
from conversations import services
from conversations.forms import InboxCreateForm
from conversations.models import RoutingMode
from core.api import client_ip
from core.errors import DomainError, Invalid
from core.web import admin_required
from inboxes import server_prefill
from inboxes import services as mailbox_services
from inboxes.forms import TeamMailboxConnectForm
from inboxes.history import backfill_select_context
from inboxes.models import Inbox, MailboxKind
from inboxes.oauth_connect import allow_sign_in_forms, connect_options
from inboxes.selectors import inbox_plan_usage, inboxes_visible_to
from inboxes.throttling import failed_connection_tests_limited

STEPS = ["Name", "Team email", "Routing", "Done"]


def _steps(current: int) -> list[dict[str, object]]:
    return [
        {
            "number": n,
            "name": name,
            "state": "done" if n < current else "current" if n == current else "todo",
        }
        for n, name in enumerate(STEPS, start=1)
    ]


def _render(
    request: AuthenticatedHttpRequest,
    template: str,
    step: int,
    context: dict[str, object],
    status: int = 200,
) -> HttpResponse:
    used, limit = inbox_plan_usage(request.user.account)
    base = {
        "section": "inboxes",
        "steps": _steps(step),
        "step": step,
        "step_count": len(STEPS),
        "plan": {"used": used, "limit": limit, "name": request.user.account.get_plan_display()},
    }
    return render(request, template, {**base, **context}, status=status)


@admin_required
@require_http_methods(["GET", "POST"])
def step_name(request: AuthenticatedHttpRequest) -> HttpResponse:
    form = InboxCreateForm(request.POST or None)
    error = None
    if request.method == "POST" and form.is_valid():
        try:
            inbox = services.inbox_create(
                actor=request.user, name=form.cleaned_data["name"], ip=client_ip(request)
            )
        except DomainError as exc:
            error = exc
        else:
            messages.success(request, f"Inbox {inbox.name} is created. Now connect its team email.")
            return redirect("settings-inbox-setup-email", pk=inbox.pk)
    status = error.status if error else (400 if request.method == "POST" else 200)
    return _render(
        request, "conversations/setup_name.html", 1, {"form": form, "error": error}, status
    )


def _inbox(request: AuthenticatedHttpRequest, pk: str) -> Inbox:
    return get_object_or_404(inboxes_visible_to(request.user), pk=pk)


@admin_required
@require_http_methods(["GET", "POST"])
def step_email(request: AuthenticatedHttpRequest, pk: str) -> HttpResponse:
    inbox = _inbox(request, pk)
    if inbox.mailbox_id and request.method == "GET":
        return redirect("settings-inbox-setup-routing", pk=inbox.pk)
    form = TeamMailboxConnectForm(request.POST or None)
    error: DomainError | None = None
    status = 200
    prefill_note = ""
    if request.method == "POST" and server_prefill.wants_fill(request):
        form, prefill_note = server_prefill.prefilled_form(TeamMailboxConnectForm, request.POST)
    elif request.method == "POST":
        status = 400
        if form.is_valid():
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
                        acknowledge_team_visibility=form.cleaned_data[
                            "acknowledge_team_visibility"
                        ],
                        backfill_days=form.cleaned_data["backfill_days"],
                    )
            except DomainError as exc:
                error, status = exc, exc.status
            else:
                messages.success(
                    request, f"{mailbox.address} is now the team email of inbox {inbox.name}."
                )
                return redirect("settings-inbox-setup-routing", pk=inbox.pk)
    page = _render(
        request,
        "conversations/setup_email.html",
        2,
        {
            "inbox": inbox,
            "team_form": form if request.method == "POST" else TeamMailboxConnectForm(),
            "error": error,
            "prefill_note": prefill_note,
            "connect_options": connect_options(),
            **backfill_select_context(),
        },
        status,
    )
    return allow_sign_in_forms(page)


@admin_required
@require_http_methods(["GET", "POST"])
def step_routing(request: AuthenticatedHttpRequest, pk: str) -> HttpResponse:
    inbox = _inbox(request, pk)
    teams = [team for team in teams_with_members(request.user) if team.members.all()]
    error: DomainError | None = None
    if request.method == "POST":
        choice = request.POST.get("routing", "none")
        team = next((t for t in teams if str(t.pk) == choice.removeprefix("team:")), None)
        try:
            if choice == "none":
                services.routing_rule_set(actor=request.user, inbox=inbox, mode=RoutingMode.NONE)
            elif team is not None:
                services.routing_rule_set(
                    actor=request.user, inbox=inbox, mode=RoutingMode.ROUND_ROBIN, team=team
                )
            else:
                raise Invalid("Choose one of the options: that team is unknown or has no members.")
        except DomainError as exc:
            error = exc
        else:
            return redirect("settings-inbox-setup-done", pk=inbox.pk)
    return _render(
        request,
        "conversations/setup_routing.html",
        3,
        {"inbox": inbox, "teams": teams, "error": error},
        error.status if error else 200,
    )


@admin_required
def step_done(request: AuthenticatedHttpRequest, pk: str) -> HttpResponse:
    inbox = _inbox(request, pk)
    return _render(request, "conversations/setup_done.html", 4, {"inbox": inbox})


urlpatterns = [
    path("settings/inboxes/new/", step_name, name="settings-inbox-create"),
    path("settings/inboxes/<uuid:pk>/setup/email/", step_email, name="settings-inbox-setup-email"),
    path(
        "settings/inboxes/<uuid:pk>/setup/routing/",
        step_routing,
        name="settings-inbox-setup-routing",
    ),
    path("settings/inboxes/<uuid:pk>/setup/done/", step_done, name="settings-inbox-setup-done"),
]
