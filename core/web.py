"""Small helpers shared by the settings pages."""

from __future__ import annotations

from functools import wraps

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied

from core.errors import DomainError


def admin_required(view):
    """Admin pages are checked on the server, not just hidden from the menu."""

    @login_required
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if not request.user.is_admin:
            raise PermissionDenied("Only an account admin can open this page.")
        return view(request, *args, **kwargs)

    return wrapper


def report(request, exc: DomainError) -> None:
    messages.error(request, exc.detail)


def back_to(request, default: str):
    """Redirect to the form's ``next`` when it is a local path, else to ``default``."""
    from django.shortcuts import redirect
    from django.utils.http import url_has_allowed_host_and_scheme

    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return redirect(target)
    return redirect(default)
