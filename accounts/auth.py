"""The signed-in user of a request, typed as a User.

``request.user`` is typed ``User | AnonymousUser``. Web views behind
``login_required`` annotate their request as ``AuthenticatedHttpRequest``; API
views (IsAuthenticated by default) read the user through ``api_user``.
"""

from __future__ import annotations

from django.http import HttpRequest
from rest_framework.exceptions import NotAuthenticated
from rest_framework.request import Request

from accounts.models import User


class AuthenticatedHttpRequest(HttpRequest):
    """The request of a view behind ``login_required``: its user is signed in."""

    user: User


def api_user(request: Request) -> User:
    """The user of an API request that passed IsAuthenticated."""
    user = request.user
    if not isinstance(user, User):
        raise NotAuthenticated()
    return user
