from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db.models import Prefetch, Q, QuerySet

from accounts.models import Team, User


def users_visible_to(user: User) -> QuerySet[User]:
    return User.objects.filter(account_id=user.account_id)


def people_to_choose(actor: User, chosen_ids: Iterable[Any]) -> QuerySet[User]:
    """Active people, plus anyone already chosen who has been deactivated since (shown
    so that saving a form never drops them without the admin seeing it)."""
    return (
        users_visible_to(actor)
        .filter(Q(is_active=True) | Q(pk__in=chosen_ids))
        .order_by("full_name", "email")
    )


def teams_visible_to(user: User) -> QuerySet[Team]:
    return Team.objects.filter(account_id=user.account_id)


def teams_with_members(user: User) -> QuerySet[Team]:
    """The account's teams by name, each with its members by name."""
    return (
        teams_visible_to(user)
        .prefetch_related(Prefetch("members", queryset=User.objects.order_by("full_name", "email")))
        .order_by("name")
    )


def users_by_ids(actor: User, ids: Iterable[Any]) -> QuerySet[User]:
    """The people of the actor's account among ``ids`` (the caller compares counts to
    tell an unknown id)."""
    return users_visible_to(actor).filter(pk__in=ids)


def teams_by_ids(actor: User, ids: Iterable[Any]) -> QuerySet[Team]:
    """The teams of the actor's account among ``ids``."""
    return teams_visible_to(actor).filter(pk__in=ids)
