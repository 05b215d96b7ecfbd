"""Small helpers shared by the settings pages."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from functools import wraps
from typing import Any, TypeVar, cast

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponseBase, HttpResponseRedirect

from core.errors import DomainError

_View = TypeVar("_View", bound=Callable[..., HttpResponseBase])


def admin_required(view: _View) -> _View:
    """Admin pages are checked on the server, not just hidden from the menu."""

    @login_required
    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        # login_required let only a signed-in user through; is_admin is the User's.
        if not getattr(request.user, "is_admin", False):
            raise PermissionDenied("Only an account admin can open this page.")
        return view(request, *args, **kwargs)

    return cast(_View, wrapper)


def report(request: HttpRequest, exc: DomainError) -> None:
    messages.error(request, exc.detail)


def back_to(request: HttpRequest, default: str) -> HttpResponseRedirect:
    """Redirect to the form's ``next`` when it is a local path, else to ``default``."""
    from django.shortcuts import redirect
    from django.utils.http import url_has_allowed_host_and_scheme

    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return redirect(target)
    return redirect(default)


class UserFacingError(Exception):
    """A form problem found by a settings page, before any service is called."""


def posted_ids(values: Iterable[Any]) -> tuple[set[uuid.UUID], bool]:
    """The UUIDs among posted values, and whether any value was not a UUID at all."""
    found, junk = set(), False
    for value in values:
        try:
            found.add(uuid.UUID(str(value)))
        except ValueError:
            junk = True
    return found, junk


def names_text(people: Iterable[Any]) -> str:
    """'Ada', 'Ada and Ben', 'Ada, Ben and Cleo' (display names, or the values as text)."""
    names = [getattr(p, "display_name", None) or str(p) for p in people]
    if len(names) <= 1:
        return "".join(names)
    return f"{', '.join(names[:-1])} and {names[-1]}"
