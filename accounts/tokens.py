"""API tokens a user makes, names and revokes (Settings > API tokens), and the
authentication that accepts them beside the one login token of
``POST /api/v1/auth/token/``."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone
from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token
from rest_framework.exceptions import AuthenticationFailed

from accounts.models import ApiToken, User
from audit.services import audit_record
from core.errors import Invalid
from core.text import check_single_line

KEY_PREFIX = "pk_"
# How stale "last used" may get before a request writes it again (one write per
# token per minute, not one per request).
_LAST_USED_STEP = timedelta(minutes=1)


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def api_tokens_of(user: User) -> QuerySet[ApiToken]:
    """The user's own named tokens, newest first, revoked ones included."""
    return ApiToken.objects.filter(user=user).order_by("-created_at")


def login_token_of(user: User) -> Token | None:
    """The token ``POST /api/v1/auth/token/`` hands out, if the user has one."""
    return Token.objects.filter(user=user).first()


def api_token_create(*, user: User, name: str, ip: str | None = None) -> tuple[ApiToken, str]:
    """A new named token; returns it and its key, which is never shown again."""
    name = (name or "").strip()
    if not name:
        raise Invalid(
            "Give the token a name, such as the tool that will use it.",
            errors={"name": ["This field is required."]},
        )
    if len(name) > 100:
        raise Invalid(
            "The name is too long: use at most 100 characters.",
            errors={"name": ["At most 100 characters."]},
        )
    check_single_line(name, field="name", label="token name")
    key = KEY_PREFIX + secrets.token_urlsafe(30)
    with transaction.atomic():
        token = ApiToken.objects.create(
            user=user, name=name, key_hash=_hash(key), prefix=key[: len(KEY_PREFIX) + 6]
        )
        audit_record(
            account=user.account,
            actor=user,
            action="api_token.created",
            target=token,
            target_repr=f"{name} ({user.email})",
            ip=ip,
        )
    return token, key


def api_token_revoke(*, user: User, token: ApiToken, ip: str | None = None) -> ApiToken:
    """Revoke one of the user's own tokens; the API refuses it from now on."""
    if token.user_id != user.pk:
        raise Invalid("This is not one of your tokens.")
    with transaction.atomic():
        # Conditional, so a double submit records one revocation.
        revoked = ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(
            revoked_at=timezone.now()
        )
        if revoked:
            audit_record(
                account=user.account,
                actor=user,
                action="api_token.revoked",
                target=token,
                target_repr=f"{token.name} ({user.email})",
                ip=ip,
            )
    token.refresh_from_db()
    return token


def login_token_revoke(*, user: User, ip: str | None = None) -> bool:
    """Delete the user's login token; the next ``POST /auth/token/`` makes a new one."""
    with transaction.atomic():
        deleted, _ = Token.objects.filter(user=user).delete()
        if deleted:
            audit_record(
                account=user.account,
                actor=user,
                action="api_token.revoked",
                target_repr=f"login token ({user.email})",
                ip=ip,
            )
    return bool(deleted)


class ApiTokenAuthentication(TokenAuthentication):
    """``Authorization: Token <key>``: a named token that is not revoked, or the login
    token. Either way a deactivated user is refused."""

    def authenticate_credentials(self, key: str) -> tuple[Any, Any]:
        if key.startswith(KEY_PREFIX):
            token = ApiToken.objects.select_related("user").filter(key_hash=_hash(key)).first()
            if token is None or token.revoked_at is not None:
                raise AuthenticationFailed("Invalid or revoked token.")
            if not token.user.is_active:
                raise AuthenticationFailed("User inactive or deleted.")
            now = timezone.now()
            if token.last_used_at is None or now - token.last_used_at > _LAST_USED_STEP:
                ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
            return token.user, token
        return super().authenticate_credentials(key)
