"""Settings > Inboxes > Routing and access (admins): how new conversations are
assigned, who sees the inbox, and the from-name and signature of its replies.

The views stay thin: they read the form, call the services (which check the
admin role again, and every rule the API is held to) and show what came back, in
plain words when it went wrong. Settings > Users > Teams is accounts/team_views.py;
the inbox overview is conversations/overview_views.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from accounts.auth import AuthenticatedHttpRequest
from accounts.models import Team, User
from accounts.selectors import people_to_choose, teams_by_ids, teams_with_members, users_by_ids
from conversations import services
from conversations.models import RoutingMode, RoutingRule
from conversations.routing import next_in_turn, routing_candidates
from conversations.selectors import people_who_see, routing_rule_with_people
from core.api import client_ip
from core.errors import DomainError
from core.web import UserFacingError, admin_required, names_text, posted_ids
from inboxes.models import Inbox
from inboxes.selectors import inboxes_visible_to


@dataclass
class RoutingState:
    """What the routing form shows: the saved rule, or what was just posted."""

    mode: str = RoutingMode.NONE
    source: str = "users"  # "users" or "team"
    users: set = field(default_factory=set)
    team: str = ""


def _routing_state(rule: RoutingRule | None) -> RoutingState:
    if rule is None:
        return RoutingState()
    return RoutingState(
        mode=rule.mode,
        source="team" if rule.team_id else "users",
        users={str(pk) for pk in rule.users.values_list("pk", flat=True)},
        team=str(rule.team_id or ""),
    )


def _turns(rule: RoutingRule | None) -> dict[str, Any]:
    """Who takes turns, in which order, whose turn is next, and who would be skipped."""
    if rule is None or rule.mode != RoutingMode.ROUND_ROBIN:
        return {"active": False, "people": [], "next": None}
    candidates = routing_candidates(rule)
    chosen, _skipped = next_in_turn(candidates, rule.last_assigned_id)
    people = []
    for person in candidates:
        if not person.is_active:
            state = "deactivated"
        elif not person.is_available:
            state = "away"
        else:
            state = "available"
        people.append(
            {
                "user": person,
                "state": state,
                "is_next": chosen is not None and person.pk == chosen.pk,
                "was_last": person.pk == rule.last_assigned_id,
            }
        )
    return {
        "active": True,
        "people": people,
        "next": chosen,
        "source": f"team {rule.team.name}" if rule.team is not None else "the people chosen",
        "team_empty": bool(rule.team_id) and not candidates,
    }


def _visibility_state(inbox: Inbox) -> dict[str, Any]:
    return {
        "restricted": inbox.restricted,
        "teams": {str(t.pk) for t in inbox.visible_to_teams.all()},
    }


def _routing_page(
    request: AuthenticatedHttpRequest,
    inbox: Inbox,
    *,
    routing: RoutingState | None = None,
    visibility: dict[str, Any] | None = None,
    reply: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> HttpResponse:
    rule = routing_rule_with_people(inbox)
    routing = routing or _routing_state(rule)
    chosen_ids, _ = posted_ids(routing.users)
    teams = list(teams_with_members(request.user))
    inbox = inboxes_visible_to(request.user).get(pk=inbox.pk)  # fresh, with its teams
    return render(
        request,
        "conversations/routing.html",
        {
            "section": "inboxes",
            "inbox": inbox,
            "rule": rule,
            "routing": routing,
            "people": list(people_to_choose(request.user, chosen_ids)),
            "teams": teams,
            "turns": _turns(rule),
            "visibility": visibility or _visibility_state(inbox),
            "who_sees": people_who_see(inbox),
            "reply": reply or {"from_name": inbox.from_name, "signature": inbox.signature},
            "errors": errors or {},
        },
        status=status,
    )


@admin_required
@require_http_methods(["GET", "POST"])
def inbox_routing(request: AuthenticatedHttpRequest, pk: UUID) -> HttpResponse:
    inbox = get_object_or_404(inboxes_visible_to(request.user), pk=pk)
    if request.method == "GET":
        return _routing_page(request, inbox)

    state = RoutingState(
        mode=request.POST.get("mode", ""),
        source="team" if request.POST.get("source") == "team" else "users",
        users=set(request.POST.getlist("users")),
        team=request.POST.get("team", ""),
    )
    try:
        if state.mode not in RoutingMode.values:
            raise UserFacingError(
                "Choose how new conversations are assigned: no automatic assignment, or round-robin."
            )
        users: list[User] = []
        team: Team | None = None
        if state.source == "users":
            wanted, junk = posted_ids(state.users)
            users = list(users_by_ids(request.user, wanted))
            if junk or len(users) != len(wanted):
                raise UserFacingError(
                    "One of the people you chose is no longer in this account. "
                    "Reload the page and choose again."
                )
            if state.mode == RoutingMode.ROUND_ROBIN and not users:
                raise UserFacingError(
                    "Round-robin needs people to take turns: tick at least one person, "
                    "or take turns among the members of a team."
                )
        else:
            wanted, junk = posted_ids([state.team] if state.team else [])
            if wanted and not junk:
                team = teams_by_ids(request.user, wanted).first()
            if junk or (wanted and team is None):
                raise UserFacingError(
                    "That team no longer exists. Reload the page and choose again."
                )
            if state.mode == RoutingMode.ROUND_ROBIN and team is None:
                raise UserFacingError(
                    "Choose the team whose members take turns, or choose people instead."
                )
        # A team without members is refused by the service, for the API alike.
        services.routing_rule_set(
            actor=request.user, inbox=inbox, mode=state.mode, users=users, team=team
        )
    except UserFacingError as exc:
        return _routing_page(
            request, inbox, routing=state, errors={"routing": str(exc)}, status=400
        )
    except DomainError as exc:
        return _routing_page(
            request, inbox, routing=state, errors={"routing": exc.detail}, status=exc.status
        )
    if state.mode == RoutingMode.NONE:
        messages.success(
            request,
            f"Routing saved: new conversations in {inbox.name} stay unassigned "
            "until someone takes them.",
        )
    else:
        among = f"the members of team {team.name}" if team is not None else names_text(users)
        messages.success(
            request, f"Routing saved: new conversations in {inbox.name} go round-robin to {among}."
        )
    return redirect("settings-inbox-routing", pk=inbox.pk)


@admin_required
@require_POST
def inbox_visibility(request: AuthenticatedHttpRequest, pk: UUID) -> HttpResponse:
    inbox = get_object_or_404(inboxes_visible_to(request.user), pk=pk)
    restricted = request.POST.get("visibility") == "teams"
    state: dict[str, Any] = {"restricted": restricted, "teams": set(request.POST.getlist("teams"))}
    try:
        wanted, junk = posted_ids(state["teams"])
        teams = list(teams_by_ids(request.user, wanted))
        if junk or len(teams) != len(wanted):
            raise UserFacingError(
                "One of the teams you chose no longer exists. Reload the page and choose again."
            )
        # An inbox restricted to no team is refused by the service, for the API alike.
        services.inbox_update(
            actor=request.user,
            inbox=inbox,
            restricted=restricted,
            teams=teams,
            ip=client_ip(request),
        )
    except UserFacingError as exc:
        return _routing_page(
            request, inbox, visibility=state, errors={"visibility": str(exc)}, status=400
        )
    except DomainError as exc:
        return _routing_page(
            request, inbox, visibility=state, errors={"visibility": exc.detail}, status=exc.status
        )
    if restricted:
        messages.success(
            request,
            f"Only admins and the members of {names_text(sorted(t.name for t in teams))} "
            f"now see {inbox.name}.",
        )
    else:
        messages.success(request, f"Everyone in the account now sees {inbox.name}.")
    return redirect("settings-inbox-routing", pk=inbox.pk)


@admin_required
@require_POST
def inbox_replies(request: AuthenticatedHttpRequest, pk: UUID) -> HttpResponse:
    inbox = get_object_or_404(inboxes_visible_to(request.user), pk=pk)
    state = {
        "from_name": request.POST.get("from_name", ""),
        "signature": request.POST.get("signature", ""),
    }
    try:
        # The lengths are the service's rules, for the API alike.
        services.inbox_update(
            actor=request.user,
            inbox=inbox,
            from_name=state["from_name"],
            signature=state["signature"],
            ip=client_ip(request),
        )
    except DomainError as exc:
        return _routing_page(
            request, inbox, reply=state, errors={"reply": exc.detail}, status=exc.status
        )
    messages.success(request, f"Inbox {inbox.name}: from-name and signature saved.")
    return redirect("settings-inbox-routing", pk=inbox.pk)


@admin_required
@require_POST
def inbox_auto_replies(request: AuthenticatedHttpRequest, pk: UUID) -> HttpResponse:
    inbox = get_object_or_404(inboxes_visible_to(request.user), pk=pk)
    reopen = request.POST.get("reopen_on_auto_reply") == "1"
    services.inbox_update(
        actor=request.user, inbox=inbox, reopen_on_auto_reply=reopen, ip=client_ip(request)
    )
    if reopen:
        messages.success(
            request, f"Inbox {inbox.name}: automatic replies reopen closed conversations."
        )
    else:
        messages.success(
            request, f"Inbox {inbox.name}: automatic replies leave closed conversations closed."
        )
    return redirect("settings-inbox-routing", pk=inbox.pk)
