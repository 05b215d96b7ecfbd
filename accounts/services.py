"""Writes on accounts, users and API tokens."""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib.auth import authenticate
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request

from accounts import hooks
from accounts.lockouts import lockout_seconds
from accounts.models import Account, Plan, Role, Team, User, normalize_login_email
from audit.services import audit_record
from core.errors import Invalid, PermissionDeniedError, RateLimited
from core.middleware import note_retry_after
from core.text import check_single_line

LOCKED_OUT = "Too many failed login attempts. Try again later."


def account_lock(account_id: uuid.UUID) -> Account:
    """Serialise writes that must see each other within one account.

    The rules span several tables (mailboxes, inboxes, meetings connections), so
    no single unique index can decide every race; holding the account row for
    the length of the writing transaction does. On SQLite the IMMEDIATE
    transaction mode (config/settings.py) already serialises writers.
    """
    return Account.objects.select_for_update().get(pk=account_id)


def _check_password(password: str, user: User | None = None) -> None:
    try:
        validate_password(password, user)
    except ValidationError as exc:
        raise Invalid("The password is too weak.", errors={"password": list(exc.messages)}) from exc


def account_create(
    *, name: str, plan: str, admin_email: str, admin_password: str, admin_full_name: str = ""
) -> tuple[Account, User, str]:
    """A new company account with its first admin; returns the admin's API token."""
    if plan not in Plan.values:
        raise Invalid(f"Unknown plan {plan!r}.", errors={"plan": [f"Choose one of {Plan.values}."]})
    if not name.strip():
        raise Invalid("The account needs a name.", errors={"name": ["This field is required."]})
    check_single_line(name, field="name", label="account name")
    with transaction.atomic():
        account = Account.objects.create(name=name.strip(), plan=plan)
        admin = user_create(
            actor=None,
            account=account,
            email=admin_email,
            full_name=admin_full_name,
            role=Role.ADMIN,
            password=admin_password,
        )
    token = Token.objects.create(user=admin)
    return account, admin, token.key


def user_create(
    *,
    actor: User | None,
    account: Account,
    email: str,
    full_name: str,
    role: str,
    password: str | None,
    ip: str | None = None,
) -> User:
    """``actor`` None means the system (createaccount); otherwise an admin. No
    password (an invitation, accounts/invites.py) leaves it unusable until the user
    chooses one."""
    if actor is not None and not actor.is_admin:
        raise PermissionDeniedError("Only an account admin can create users.")
    if role not in Role.values:
        raise Invalid(f"Unknown role {role!r}.", errors={"role": ['Use "admin" or "member".']})
    # The user's name is the display name of the From of what they send.
    check_single_line(full_name, field="full_name", label="name")
    email = normalize_login_email(email)
    candidate = User(account=account, email=email, full_name=full_name, role=role)
    if password is not None:
        _check_password(password, candidate)
    try:
        with transaction.atomic():
            user = User.objects.create_user(
                email=email, password=password, account=account, full_name=full_name, role=role
            )
    except IntegrityError as exc:
        # A login email is unique across every account (it is all the login form
        # and the token endpoint ask for), so the same words whether the address
        # is taken here or elsewhere: never confirm that it has a login in another
        # account. (An admin sees their own account's users in the list.)
        raise Invalid(
            "This email address can't be used. Choose another one.",
            errors={"email": ["This email address can't be used."]},
        ) from exc
    audit_record(
        account=account,
        actor=actor,
        action="user.created",
        target=user,
        target_repr=user.email,
        ip=ip,
        data={"role": role},
    )
    return user


def user_update(
    *,
    actor: User,
    user: User,
    full_name: str | None = None,
    role: str | None = None,
    ip: str | None = None,
) -> User:
    """Rename a user or change their role; the audit line says what it was before."""
    if not actor.is_admin or actor.account_id != user.account_id:
        raise PermissionDeniedError("Only an account admin can change users.")
    changes: dict[str, dict[str, str]] = {}
    if full_name is not None:
        full_name = full_name.strip()
        if len(full_name) > 200:
            raise Invalid(
                "The name is too long: use at most 200 characters.",
                errors={"full_name": ["At most 200 characters."]},
            )
        check_single_line(full_name, field="full_name", label="name")
        if full_name != user.full_name:
            changes["full_name"] = {"before": user.full_name, "after": full_name}
    if role is not None and role != user.role:
        if role not in Role.values:
            raise Invalid(f"Unknown role {role!r}.", errors={"role": ['Use "admin" or "member".']})
        if user.pk == actor.pk:
            # An admin who demotes themselves could leave the account without one.
            raise Invalid(
                "You cannot change your own role. Ask another admin to do it.",
                errors={"role": ["You cannot change your own role."]},
            )
        changes["role"] = {"before": user.role, "after": role}
    if not changes:
        return user
    with transaction.atomic():
        if "full_name" in changes:
            user.full_name = changes["full_name"]["after"]
        if "role" in changes:
            user.role = changes["role"]["after"]
        user.save(update_fields=["full_name", "role", "updated_at"])
        for field, change in changes.items():
            audit_record(
                account=user.account,
                actor=actor,
                action=_UPDATE_ACTIONS[field],
                target=user,
                target_repr=user.email,
                ip=ip,
                data={"changes": {field: change}},
            )
    return user


_UPDATE_ACTIONS = {"full_name": "user.renamed", "role": "user.role_changed"}


def user_deactivate(*, actor: User, user: User, ip: str | None = None) -> User:
    """Blocks login, sessions and API tokens at once; keeps mailboxes and history."""
    if not actor.is_admin:
        raise PermissionDeniedError("Only an account admin can deactivate users.")
    if user.pk == actor.pk:
        raise Invalid("You cannot deactivate yourself.")
    if user.is_active:
        user.is_active = False
        user.deactivated_at = timezone.now()
        user.save(update_fields=["is_active", "deactivated_at", "updated_at"])
        hooks.user_deactivated(user)
        audit_record(
            account=user.account,
            actor=actor,
            action="user.deactivated",
            target=user,
            target_repr=user.email,
            ip=ip,
        )
    return user


def user_reactivate(*, actor: User, user: User, ip: str | None = None) -> User:
    if not actor.is_admin:
        raise PermissionDeniedError("Only an account admin can reactivate users.")
    if not user.is_active:
        user.is_active = True
        user.deactivated_at = None
        user.save(update_fields=["is_active", "deactivated_at", "updated_at"])
        audit_record(
            account=user.account,
            actor=actor,
            action="user.reactivated",
            target=user,
            target_repr=user.email,
            ip=ip,
        )
    return user


def token_obtain(*, request: Request, email: str, password: str) -> str:
    """Exchange email and password for the user's API token.

    Goes through ``authenticate`` so django-axes counts failures per address and
    per IP exactly as for the login form.
    """
    # django-axes keeps its lockout flag on the Django request, not DRF's wrapper.
    http_request = request._request
    login_email = normalize_login_email(email)
    # Read back by login_username (AXES_USERNAME_CALLABLE): an attribute of this request only.
    http_request.login_email = login_email  # type: ignore[attr-defined]
    user = authenticate(request=http_request, username=login_email, password=password)
    if user is None:
        if getattr(http_request, "axes_locked_out", False):
            seconds = lockout_seconds()
            note_retry_after(http_request, seconds)
            raise RateLimited(LOCKED_OUT, retry_after=seconds)
        raise AuthenticationFailed("Wrong email or password, or the user is deactivated.")
    token, _ = Token.objects.get_or_create(user=user)
    key: str = token.key  # the stubs type Token.key as a bare CharField (Any)
    return key


def login_username(
    request: HttpRequest | None, credentials: dict[str, Any] | None = None
) -> str | None:
    """The address django-axes counts failures under, for the form and the API alike."""
    username = (credentials or {}).get("username") or getattr(request, "login_email", None)
    if not username and request is not None:
        username = request.POST.get("username")
    return normalize_login_email(username) if username else None


def lockout_response(
    request: HttpRequest,
    original_response: HttpResponse | None = None,
    credentials: dict[str, Any] | None = None,
    *args: Any,
    **kwargs: Any,
) -> HttpResponse:
    """django-axes lockout: JSON for the API, a plain page for the web form."""
    from django.shortcuts import render

    seconds = lockout_seconds()
    response: HttpResponse
    if request.path.startswith("/api/"):
        body = {"code": "rate_limited", "detail": LOCKED_OUT, "retry_after": seconds}
        response = JsonResponse(body, status=429)
    else:
        response = render(request, "accounts/locked_out.html", {"detail": LOCKED_OUT}, status=429)
    response["Retry-After"] = str(seconds)
    return response


def team_save(
    *,
    actor: User,
    name: str,
    members: list[User],
    team: Team | None = None,
    ip: str | None = None,
) -> Team:
    """Create or change a team (used by routing rules and inbox visibility)."""
    if not actor.is_admin:
        raise PermissionDeniedError("Only an account admin can manage teams.")
    name = (name or "").strip()
    if not name:
        raise Invalid("The team needs a name.", errors={"name": ["This field is required."]})
    if len(name) > 200:
        raise Invalid(
            "The team name is too long: use at most 200 characters.",
            errors={"name": ["At most 200 characters."]},
        )
    check_single_line(name, field="name", label="team name")
    if any(m.account_id != actor.account_id for m in members):
        raise Invalid("Unknown user.", errors={"members": ["Unknown user."]})
    try:
        with transaction.atomic():
            changes: dict[str, dict[str, object]] = {}
            after_members = sorted(m.email for m in members)
            if team is None:
                team = Team.objects.create(account_id=actor.account_id, name=name)
                action = "team.created"
            else:
                before_members = sorted(team.members.values_list("email", flat=True))
                if team.name != name:
                    changes["name"] = {"before": team.name, "after": name}
                if before_members != after_members:
                    changes["members"] = {"before": before_members, "after": after_members}
                team.name = name
                team.save(update_fields=["name", "updated_at"])
                action = "team.updated"
            team.members.set(members)
            data: dict[str, object] = {"members": after_members}
            if changes:
                data["changes"] = changes
            audit_record(
                account=actor.account,
                actor=actor,
                action=action,
                target=team,
                ip=ip,
                data=data,
            )
    except IntegrityError as exc:
        raise Invalid(
            f"There is already a team called {name}.",
            errors={"name": ["A team with this name exists."]},
        ) from exc
    return team


def team_delete(*, actor: User, team: Team, ip: str | None = None) -> None:
    if not actor.is_admin:
        raise PermissionDeniedError("Only an account admin can manage teams.")
    with transaction.atomic():
        audit_record(account=actor.account, actor=actor, action="team.deleted", target=team, ip=ip)
        team.delete()
