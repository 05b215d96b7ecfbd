"""Settings > Users > Teams (admins): create, rename, change the members of and
delete teams.

Teams are used by the apps above accounts (an inbox's round-robin, who may see an
inbox); the page shows where through accounts/hooks.py, and says after a deletion
what it left behind. The views stay thin: they read the form, call the services
(which check the admin role again) and show what came back.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from accounts import services
from accounts.auth import AuthenticatedHttpRequest
from accounts.hooks import team_usage
from accounts.models import User
from accounts.selectors import (
    people_to_choose,
    teams_visible_to,
    teams_with_members,
    users_by_ids,
)
from core.api import client_ip
from core.errors import DomainError
from core.web import UserFacingError, admin_required, posted_ids

TeamForm = dict[str, Any]  # {"pk", "name", "members": {id as text}} as posted


def _teams_page(
    request: AuthenticatedHttpRequest,
    *,
    create: TeamForm | None = None,
    edit: TeamForm | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> HttpResponse:
    teams = list(teams_with_members(request.user))
    usage = team_usage(teams)
    member_ids = {str(m.pk) for team in teams for m in team.members.all()}
    people = list(people_to_choose(request.user, member_ids))
    rows = []
    for team in teams:
        editing = edit is not None and edit["pk"] == str(team.pk)
        rows.append(
            {
                "team": team,
                "members": list(team.members.all()),
                "uses": usage[team.pk].uses,
                "on_delete": usage[team.pk].on_delete,
                "form": edit
                if editing
                else {"name": team.name, "members": {str(m.pk) for m in team.members.all()}},
                "error": (errors or {}).get(str(team.pk)),
                "open": editing,
            }
        )
    return render(
        request,
        "accounts/teams.html",
        {
            "section": "teams",
            "rows": rows,
            "people": people,
            "create": create or {"name": "", "members": set()},
            "errors": errors or {},
        },
        status=status,
    )


def _posted_team(request: AuthenticatedHttpRequest, *, pk: str = "") -> tuple[TeamForm, list[User]]:
    state: TeamForm = {
        "pk": pk,
        "name": request.POST.get("name", ""),
        "members": set(request.POST.getlist("members")),
    }
    wanted, junk = posted_ids(state["members"])
    members = list(users_by_ids(request.user, wanted))
    if junk or len(members) != len(wanted):
        raise UserFacingError(
            "One of the people you chose is no longer in this account. Reload the page "
            "and choose again."
        )
    return state, members


@admin_required
@require_GET
def settings_teams(request: AuthenticatedHttpRequest) -> HttpResponse:
    return _teams_page(request)


@admin_required
@require_POST
def team_create(request: AuthenticatedHttpRequest) -> HttpResponse:
    state: TeamForm = {
        "name": request.POST.get("name", ""),
        "members": set(request.POST.getlist("members")),
    }
    try:
        state, members = _posted_team(request)
        team = services.team_save(
            actor=request.user, name=state["name"], members=members, ip=client_ip(request)
        )
    except UserFacingError as exc:
        return _teams_page(request, create=state, errors={"create": str(exc)}, status=400)
    except DomainError as exc:
        return _teams_page(request, create=state, errors={"create": exc.detail}, status=exc.status)
    count = len(members)
    messages.success(
        request,
        f"Team {team.name} is created with {count} member{'s' if count != 1 else ''}.",
    )
    return redirect("settings-teams")


@admin_required
@require_POST
def team_update(request: AuthenticatedHttpRequest, pk: UUID) -> HttpResponse:
    team = get_object_or_404(teams_visible_to(request.user), pk=pk)
    state: TeamForm = {
        "pk": str(team.pk),
        "name": request.POST.get("name", ""),
        "members": set(request.POST.getlist("members")),
    }
    try:
        state, members = _posted_team(request, pk=str(team.pk))
        team = services.team_save(
            actor=request.user,
            name=state["name"],
            members=members,
            team=team,
            ip=client_ip(request),
        )
    except UserFacingError as exc:
        return _teams_page(request, edit=state, errors={str(team.pk): str(exc)}, status=400)
    except DomainError as exc:
        return _teams_page(
            request, edit=state, errors={str(team.pk): exc.detail}, status=exc.status
        )
    messages.success(request, f"Team {team.name} is saved.")
    return redirect("settings-teams")


@admin_required
@require_POST
def team_delete(request: AuthenticatedHttpRequest, pk: UUID) -> HttpResponse:
    team = get_object_or_404(teams_visible_to(request.user), pk=pk)
    usage = team_usage([team])[team.pk]
    name = team.name
    try:
        services.team_delete(actor=request.user, team=team, ip=client_ip(request))
    except DomainError as exc:
        messages.error(request, exc.detail)
        return redirect("settings-teams")
    notes = [f"Team {name} is deleted.", *usage.notes_after_delete()]
    (messages.warning if len(notes) > 1 else messages.success)(request, " ".join(notes))
    return redirect("settings-teams")
