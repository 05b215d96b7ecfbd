"""Where inboxes use a team, for Settings > Users > Teams (accounts/team_views.py).

An inbox's round-robin can take turns among a team's members, and an inbox can be
visible to chosen teams only. Accounts may not import this app, so it asks through
the hook in accounts/hooks.py, registered in ConversationsConfig.ready().
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.urls import reverse

from accounts.hooks import TeamUsage, TeamUse
from accounts.models import Team
from conversations.models import RoutingMode, RoutingRule
from conversations.selectors import restricted_inboxes_seen_by, routing_rules_using
from core.web import names_text
from inboxes.models import Inbox


def inbox_team_usage(teams: list[Team]) -> dict[Any, TeamUsage]:
    """Per team: the inboxes whose round-robin uses it (on or off), and the inboxes
    it may see that only some teams see."""
    routing: dict[Any, list[RoutingRule]] = {team.pk: [] for team in teams}
    for rule in routing_rules_using(teams):
        routing[rule.team_id].append(rule)
    visibility = restricted_inboxes_seen_by(teams)
    return {team.pk: _usage(routing[team.pk], visibility.get(team.pk, [])) for team in teams}


def _usage(rules: list[RoutingRule], inboxes: list[Inbox]) -> TeamUsage:
    uses = [
        TeamUse(
            text=f"round-robin of {rule.inbox.name}",
            url=reverse("settings-inbox-routing", args=[rule.inbox.pk]),
            note="" if rule.mode == RoutingMode.ROUND_ROBIN else " (off)",
        )
        for rule in rules
    ]
    uses += [
        TeamUse(
            text=f"who sees {inbox.name}",
            url=reverse("settings-inbox-routing", args=[inbox.pk]),
        )
        for inbox in inboxes
    ]
    on_delete = []
    if rules:
        names = ", ".join(rule.inbox.name for rule in rules)
        on_delete.append(f"stops round-robin of {names} from reaching its members")
    if inboxes:
        names = ", ".join(inbox.name for inbox in inboxes)
        on_delete.append(f"takes {names} away from its members")
    return TeamUsage(uses=uses, on_delete=on_delete, after_delete=[_left_behind(rules, inboxes)])


def _left_behind(rules: list[RoutingRule], inboxes: list[Inbox]) -> Callable[[], list[str]]:
    """What a deleted team leaves behind: a round-robin with nobody to assign to, an
    inbox only admins see."""

    def notes() -> list[str]:
        found = []
        without_people = [
            rule.inbox.name
            for rule in rules
            if rule.mode == RoutingMode.ROUND_ROBIN and not rule.users.exists()
        ]
        if without_people:
            found.append(
                f"Round-robin of {names_text(without_people)} has nobody to assign to now: "
                "choose people on its Routing page."
            )
        hidden = [inbox.name for inbox in inboxes if not inbox.visible_to_teams.exists()]
        if hidden:
            found.append(
                f"Only admins see {names_text(hidden)} until you choose other teams for it."
            )
        return found

    return notes
