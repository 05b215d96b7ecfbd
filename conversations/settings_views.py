"""Settings > Inboxes > Routing and access, Settings > Users > Teams, and the inbox
overview (server-rendered charts of conversations/metrics.py).

The views stay thin: they read the form, call the services (which check the
admin role again) and show what came back, in plain words when it went wrong.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Prefetch, Q
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts import services as account_services
from accounts.models import Role, Team, User
from accounts.selectors import users_visible_to
from conversations import services
from conversations.charts import bar_chart, day_labels, duration_text
from conversations.metrics import agent_metrics, conversation_metrics
from conversations.models import ConversationStatus, RoutingMode, RoutingRule
from conversations.routing import next_in_turn, routing_candidates
from conversations.selectors import conversations_visible_to
from core.api import client_ip
from core.errors import DomainError
from core.web import admin_required
from inboxes.selectors import inboxes_visible_to

# --- Small helpers ---------------------------------------------------------------------------


class UserFacingError(Exception):
    """A form problem found here, before any service is called."""


def _ids(values) -> tuple[set[uuid.UUID], bool]:
    """The UUIDs among posted values, and whether any value was not a UUID at all."""
    found, junk = set(), False
    for value in values:
        try:
            found.add(uuid.UUID(str(value)))
        except ValueError:
            junk = True
    return found, junk


def _names(people) -> str:
    """'Ada', 'Ada and Ben', 'Ada, Ben and Cleo'."""
    names = [getattr(p, "display_name", None) or str(p) for p in people]
    if len(names) <= 1:
        return "".join(names)
    return f"{', '.join(names[:-1])} and {names[-1]}"


def _teams_of(user) -> list[Team]:
    return list(
        Team.objects.filter(account_id=user.account_id)
        .prefetch_related(
            Prefetch("members", queryset=User.objects.order_by("full_name", "email")), "inboxes"
        )
        .order_by("name")
    )


def _people_to_choose(actor, chosen_ids) -> list[User]:
    """Active people, plus anyone already chosen who has been deactivated since (shown
    so that saving the form never drops them without the admin seeing it)."""
    return list(
        users_visible_to(actor)
        .filter(Q(is_active=True) | Q(pk__in=chosen_ids))
        .order_by("full_name", "email")
    )


# --- Settings > Inboxes > Routing and access ---------------------------------------------------


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


def _turns(rule: RoutingRule | None) -> dict:
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
        "source": f"team {rule.team.name}" if rule.team_id else "the people chosen",
        "team_empty": bool(rule.team_id) and not candidates,
    }


def _visibility_state(inbox) -> dict:
    return {
        "restricted": inbox.restricted,
        "teams": {str(t.pk) for t in inbox.visible_to_teams.all()},
    }


def _who_sees(inbox) -> list[User]:
    """Everyone who can see the inbox now: admins, and all or only the teams' members."""
    people = User.objects.filter(account_id=inbox.account_id, is_active=True)
    if inbox.restricted:
        people = people.filter(
            Q(role=Role.ADMIN) | Q(teams__in=inbox.visible_to_teams.all())
        ).distinct()
    return list(people.order_by("full_name", "email"))


def _routing_page(
    request,
    inbox,
    *,
    routing: RoutingState | None = None,
    visibility: dict | None = None,
    reply: dict | None = None,
    errors: dict | None = None,
    status: int = 200,
):
    rule = (
        RoutingRule.objects.filter(inbox=inbox)
        .select_related("team", "last_assigned")
        .prefetch_related("users", "team__members")
        .first()
    )
    routing = routing or _routing_state(rule)
    chosen_ids, _ = _ids(routing.users)
    teams = _teams_of(request.user)
    inbox = inboxes_visible_to(request.user).get(pk=inbox.pk)  # fresh, with its teams
    return render(
        request,
        "conversations/routing.html",
        {
            "section": "inboxes",
            "inbox": inbox,
            "rule": rule,
            "routing": routing,
            "people": _people_to_choose(request.user, chosen_ids),
            "teams": teams,
            "turns": _turns(rule),
            "visibility": visibility or _visibility_state(inbox),
            "who_sees": _who_sees(inbox),
            "reply": reply or {"from_name": inbox.from_name, "signature": inbox.signature},
            "errors": errors or {},
        },
        status=status,
    )


@admin_required
@require_http_methods(["GET", "POST"])
def inbox_routing(request, pk):
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
        team = None
        if state.source == "users":
            wanted, junk = _ids(state.users)
            users = list(users_visible_to(request.user).filter(pk__in=wanted))
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
            wanted, junk = _ids([state.team] if state.team else [])
            if wanted and not junk:
                team = Team.objects.filter(
                    account_id=request.user.account_id, pk__in=wanted
                ).first()
            if junk or (wanted and team is None):
                raise UserFacingError(
                    "That team no longer exists. Reload the page and choose again."
                )
            if state.mode == RoutingMode.ROUND_ROBIN:
                if team is None:
                    raise UserFacingError(
                        "Choose the team whose members take turns, or choose people instead."
                    )
                if not team.members.exists():
                    raise UserFacingError(
                        f"Team {team.name} has no members yet, so nobody would get a "
                        "conversation. Add people to it on the Teams page, or choose people instead."
                    )
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
        among = f"the members of team {team.name}" if team is not None else _names(users)
        messages.success(
            request, f"Routing saved: new conversations in {inbox.name} go round-robin to {among}."
        )
    return redirect("settings-inbox-routing", pk=inbox.pk)


@admin_required
@require_POST
def inbox_visibility(request, pk):
    inbox = get_object_or_404(inboxes_visible_to(request.user), pk=pk)
    restricted = request.POST.get("visibility") == "teams"
    state = {"restricted": restricted, "teams": set(request.POST.getlist("teams"))}
    try:
        wanted, junk = _ids(state["teams"])
        teams = list(Team.objects.filter(account_id=request.user.account_id, pk__in=wanted))
        if junk or len(teams) != len(wanted):
            raise UserFacingError(
                "One of the teams you chose no longer exists. Reload the page and choose again."
            )
        if restricted and not teams:
            raise UserFacingError(
                "Choose at least one team that may see this inbox, or let everyone in the "
                "account see it."
            )
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
            f"Only admins and the members of {_names(sorted(t.name for t in teams))} "
            f"now see {inbox.name}.",
        )
    else:
        messages.success(request, f"Everyone in the account now sees {inbox.name}.")
    return redirect("settings-inbox-routing", pk=inbox.pk)


@admin_required
@require_POST
def inbox_replies(request, pk):
    inbox = get_object_or_404(inboxes_visible_to(request.user), pk=pk)
    state = {
        "from_name": request.POST.get("from_name", ""),
        "signature": request.POST.get("signature", ""),
    }
    try:
        if len(state["from_name"].strip()) > 200:
            raise UserFacingError("The from-name is too long: use at most 200 characters.")
        if len(state["signature"].strip()) > 5000:
            raise UserFacingError("The signature is too long: use at most 5000 characters.")
        services.inbox_update(
            actor=request.user,
            inbox=inbox,
            from_name=state["from_name"],
            signature=state["signature"],
            ip=client_ip(request),
        )
    except UserFacingError as exc:
        return _routing_page(request, inbox, reply=state, errors={"reply": str(exc)}, status=400)
    except DomainError as exc:
        return _routing_page(
            request, inbox, reply=state, errors={"reply": exc.detail}, status=exc.status
        )
    messages.success(request, f"Inbox {inbox.name}: from-name and signature saved.")
    return redirect("settings-inbox-routing", pk=inbox.pk)


# --- Settings > Users > Teams ---------------------------------------------------------------------


def _team_usage(teams: list[Team]) -> dict:
    """For each team: the inboxes whose round-robin uses it, and the inboxes it may see."""
    usage = {team.pk: {"routing": [], "visibility": []} for team in teams}
    for rule in RoutingRule.objects.filter(team__in=teams).select_related("inbox"):
        usage[rule.team_id]["routing"].append(rule)
    for team in teams:
        usage[team.pk]["visibility"] = [i for i in team.inboxes.all() if i.restricted]
    return usage


def _teams_page(request, *, create=None, edit=None, errors=None, status=200):
    teams = _teams_of(request.user)
    usage = _team_usage(teams)
    member_ids = {str(m.pk) for team in teams for m in team.members.all()}
    people = _people_to_choose(request.user, member_ids)
    rows = []
    for team in teams:
        editing = edit is not None and edit["pk"] == str(team.pk)
        rows.append(
            {
                "team": team,
                "members": list(team.members.all()),
                "routing": usage[team.pk]["routing"],
                "visibility": usage[team.pk]["visibility"],
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
            "section": "users",
            "rows": rows,
            "people": people,
            "create": create or {"name": "", "members": set()},
            "errors": errors or {},
        },
        status=status,
    )


def _posted_team(request, *, pk: str = "") -> tuple[dict, list[User]]:
    state = {
        "pk": pk,
        "name": request.POST.get("name", ""),
        "members": set(request.POST.getlist("members")),
    }
    wanted, junk = _ids(state["members"])
    members = list(users_visible_to(request.user).filter(pk__in=wanted))
    if junk or len(members) != len(wanted):
        raise UserFacingError(
            "One of the people you chose is no longer in this account. Reload the page "
            "and choose again."
        )
    return state, members


@admin_required
@require_GET
def settings_teams(request):
    return _teams_page(request)


@admin_required
@require_POST
def team_create(request):
    state = {"name": request.POST.get("name", ""), "members": set(request.POST.getlist("members"))}
    try:
        state, members = _posted_team(request)
        team = account_services.team_save(
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
def team_update(request, pk):
    team = get_object_or_404(Team.objects.filter(account_id=request.user.account_id), pk=pk)
    state = {
        "pk": str(team.pk),
        "name": request.POST.get("name", ""),
        "members": set(request.POST.getlist("members")),
    }
    try:
        state, members = _posted_team(request, pk=str(team.pk))
        team = account_services.team_save(
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
def team_delete(request, pk):
    team = get_object_or_404(Team.objects.filter(account_id=request.user.account_id), pk=pk)
    usage = _team_usage([team])[team.pk]
    name = team.name
    try:
        account_services.team_delete(actor=request.user, team=team, ip=client_ip(request))
    except DomainError as exc:
        messages.error(request, exc.detail)
        return redirect("settings-teams")
    notes = [f"Team {name} is deleted."]
    without_people = [
        rule.inbox.name
        for rule in usage["routing"]
        if rule.mode == RoutingMode.ROUND_ROBIN and not rule.users.exists()
    ]
    if without_people:
        notes.append(
            f"Round-robin of {_names(without_people)} has nobody to assign to now: "
            "choose people on its Routing page."
        )
    hidden = [inbox.name for inbox in usage["visibility"] if not inbox.visible_to_teams.exists()]
    if hidden:
        notes.append(f"Only admins see {_names(hidden)} until you choose other teams for it.")
    (messages.warning if len(notes) > 1 else messages.success)(request, " ".join(notes))
    return redirect("settings-teams")


# --- The inbox overview ---------------------------------------------------------------------------

DAY_CHOICES = (7, 14, 30)


def _days_param(request) -> int:
    try:
        days = int(request.GET.get("days", 14))
    except ValueError:
        return 14
    return days if days in DAY_CHOICES else 14


@login_required
@require_GET
def inbox_overview(request, pk):
    inbox = get_object_or_404(inboxes_visible_to(request.user), pk=pk)
    days = _days_param(request)
    conversations = conversations_visible_to(request.user).filter(inbox=inbox)
    figures = conversation_metrics(conversations, days=days)
    day_list = [date.fromisoformat(d) for d in figures["days"]]
    full, ticks, _short = day_labels(day_list)

    # Opened and closed share one scale, so their bars compare at a glance.
    shared_top = max([*figures["opened_per_day"], *figures["closed_per_day"]])

    def chart(key: str, verb: str, tone: str) -> dict:
        values = figures[key]
        return bar_chart(
            values,
            full,
            chart_id=f"chart-{verb}",
            title=f"Conversations {verb} per day, last {days} days",
            titles=[f"{label}: {value} {verb}" for label, value in zip(full, values, strict=True)],
            tick_labels=ticks,
            tone=tone,
            scale_to=shared_top,
        )

    agents = []
    # Without the model's ordering: agent_metrics takes .distinct() assignees, and an
    # ORDER BY last_message_at would make that one row per conversation.
    rows = agent_metrics(conversations, days=days)
    # Every sparkline on the same scale: a taller bar is more conversations.
    spark_top = max((max(row["opened_per_day"], default=0) for row in rows), default=0)
    for row in rows:
        opened, closed = sum(row["opened_per_day"]), sum(row["closed_per_day"])
        if not (
            opened or closed or row["first_response"]["count"] or row["time_to_close"]["count"]
        ):
            continue
        agents.append(
            {
                "name": row["name"],
                "opened": opened,
                "closed": closed,
                "first_response": duration_text(row["first_response"]["median_seconds"]),
                "time_to_close": duration_text(row["time_to_close"]["median_seconds"]),
                "spark": bar_chart(
                    row["opened_per_day"],
                    full,
                    chart_id=f"spark-{row['user']}",
                    title=f"Conversations opened per day for {row['name']}",
                    titles=[
                        f"{label}: {value} opened"
                        for label, value in zip(full, row["opened_per_day"], strict=True)
                    ],
                    spark=True,
                    scale_to=spark_top,
                ),
            }
        )

    def timing(key: str) -> dict:
        data = figures[key]
        return {
            "count": data["count"],
            "median": duration_text(data["median_seconds"]),
            "mean": duration_text(data["mean_seconds"]),
        }

    open_now = conversations.filter(status=ConversationStatus.OPEN)
    return render(
        request,
        "conversations/overview.html",
        {
            "section": "inbox",
            "inbox": inbox,
            "days": days,
            "day_choices": [
                {"days": n, "url": f"{reverse('inbox-overview', args=[inbox.pk])}?days={n}"}
                for n in DAY_CHOICES
            ],
            "first_day": day_list[0],
            "last_day": day_list[-1],
            "opened_chart": chart("opened_per_day", "opened", "opened"),
            "closed_chart": chart("closed_per_day", "closed", "closed"),
            "first_response": timing("first_response"),
            "time_to_close": timing("time_to_close"),
            "open_now": open_now.count(),
            "unassigned_now": open_now.filter(assignee__isnull=True).count(),
            "agents": agents,
            "other_inboxes": inboxes_visible_to(request.user).exclude(pk=inbox.pk).order_by("name"),
        },
    )
