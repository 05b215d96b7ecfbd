"""What the apps above accounts add to accounts' own work.

Accounts is the base layer and never imports the apps above it. They register here
in their ``AppConfig.ready()``:

- what happens when a user is deactivated (the conversations inbox sends the user's
  open conversations back to routing);
- where a team is used, for Settings > Users > Teams (the inboxes whose round-robin
  takes turns among its members, the inboxes it may see), and what deleting it left
  behind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from accounts.models import Team, User

# Called as handler(user=...); whatever it returns is ignored.
DeactivationHandler = Callable[..., object]

deactivation_handlers: list[DeactivationHandler] = []


def on_user_deactivated(handler: DeactivationHandler) -> None:
    """``handler(user=...)`` runs after a user is deactivated, inside the same request."""
    if handler not in deactivation_handlers:
        deactivation_handlers.append(handler)


def user_deactivated(user: User) -> None:
    for handler in deactivation_handlers:
        handler(user=user)


# --- Where a team is used -------------------------------------------------------------------------


@dataclass(frozen=True)
class TeamUse:
    """One place a team is used: a link on the Teams page, e.g. "round-robin of Support"."""

    text: str
    url: str
    note: str = ""  # shown after the link, e.g. " (off)"


@dataclass
class TeamUsage:
    uses: list[TeamUse] = field(default_factory=list)
    # What deleting the team changes, e.g. "stops round-robin of Support from reaching
    # its members"; the page joins them after "Deleting this team".
    on_delete: list[str] = field(default_factory=list)
    # Called once the team is deleted: what is left that an admin should know about.
    after_delete: list[Callable[[], list[str]]] = field(default_factory=list)

    def add(self, other: TeamUsage) -> None:
        self.uses += other.uses
        self.on_delete += other.on_delete
        self.after_delete += other.after_delete

    def notes_after_delete(self) -> list[str]:
        return [note for notes in self.after_delete for note in notes()]


# finder(teams) -> {team.pk: TeamUsage} for the teams it uses (others may be left out).
TeamUsageFinder = Callable[[list["Team"]], dict[Any, TeamUsage]]

team_usage_finders: list[TeamUsageFinder] = []


def on_team_usage(finder: TeamUsageFinder) -> None:
    if finder not in team_usage_finders:
        team_usage_finders.append(finder)


def team_usage(teams: Iterable[Team]) -> dict[Any, TeamUsage]:
    """Per team: where the apps above accounts use it."""
    teams = list(teams)
    usage = {team.pk: TeamUsage() for team in teams}
    for finder in team_usage_finders:
        for pk, found in finder(teams).items():
            usage[pk].add(found)
    return usage
