"""Inviting a user by email, and password resets: the links the product mails.

An invitation link carries a signed token that names the user, the moment it was
made and a fingerprint of the user's password hash. It expires after
``INVITE_MAX_AGE`` seconds and works once: setting the password changes the hash,
so the same link no longer checks. Password resets use Django's own token
generator (``PASSWORD_RESET_TIMEOUT``), which works the same way. Both emails go
through the product's own mail (core/mail.py, ``EMAIL_URL``), never a customer's
mailbox.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import smtplib
from datetime import datetime

from django.conf import settings
from django.contrib.auth.tokens import default_token_generator
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import transaction
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.crypto import constant_time_compare, salted_hmac
from django.utils.encoding import force_bytes
from django.utils.http import base36_to_int, int_to_base36, urlsafe_base64_encode

from accounts.models import Account, User, normalize_login_email
from accounts.services import _check_password, user_create
from audit.services import audit_record
from core.errors import DomainError, Invalid, PermissionDeniedError
from core.mail import product_mail_send

logger = logging.getLogger(__name__)

_SALT = "accounts.invites.invite"


def _seconds(moment: datetime) -> int:
    return int(moment.timestamp())


def _signature(user: User, timestamp: int) -> str:
    # The password hash makes the link single-use: setting a password changes it.
    value = f"{user.pk}{user.password}{timestamp}{user.is_active}"
    return salted_hmac(_SALT, value, algorithm="sha256").hexdigest()[:40]


def invite_token_make(user: User, *, now: datetime | None = None) -> str:
    timestamp = _seconds(now or timezone.now())
    return f"{int_to_base36(timestamp)}-{_signature(user, timestamp)}"


def invite_token_check(user: User, token: str, *, now: datetime | None = None) -> bool:
    """True while the token is the user's, unused and younger than INVITE_MAX_AGE."""
    if not user.is_active or user.has_usable_password():
        return False
    try:
        timestamp_b36, signature = token.split("-", 1)
        timestamp = base36_to_int(timestamp_b36)
    except ValueError:
        return False
    if not constant_time_compare(signature, _signature(user, timestamp)):
        return False
    age = _seconds(now or timezone.now()) - timestamp
    return 0 <= age <= settings.INVITE_MAX_AGE


def _uid(user: User) -> str:
    return urlsafe_base64_encode(force_bytes(user.pk))


def invite_link(user: User, *, now: datetime | None = None) -> str:
    path = reverse("invite-accept", args=[_uid(user), invite_token_make(user, now=now)])
    return settings.PUBLIC_URL + path


class MailNotSent(DomainError):
    """The operator's mail server did not take the email (EMAIL_URL)."""

    code = "mail_not_sent"
    status = 502


def _send(user: User, template: str, context: dict[str, object]) -> None:
    context = {"user": user, "account": user.account, **context}
    subject = " ".join(render_to_string(f"emails/{template}_subject.txt", context).split())
    text = render_to_string(f"emails/{template}.txt", context)
    try:
        product_mail_send(to=[user.email], subject=subject, text=text)
    except (smtplib.SMTPException, OSError) as exc:
        logger.warning("The product's mail server refused an email to %s: %s", user.pk, exc)
        raise MailNotSent(
            f"The email to {user.email} could not be sent: the outgoing mail server did not "
            "take it. Check the server's EMAIL_URL setting, then send it again."
        ) from exc


def user_invite(
    *,
    actor: User,
    account: Account,
    email: str,
    full_name: str,
    role: str,
    ip: str | None = None,
) -> User:
    """Create the user without a password and mail them a link to choose one."""
    if not actor.is_admin:
        raise PermissionDeniedError("Only an account admin can invite users.")
    with transaction.atomic():
        user = user_create(
            actor=actor,
            account=account,
            email=email,
            full_name=full_name,
            role=role,
            password=None,
            ip=ip,
        )
        audit_record(
            account=account,
            actor=actor,
            action="user.invited",
            target=user,
            target_repr=user.email,
            ip=ip,
        )
    # After the commit: no network I/O inside a transaction.
    invite_send(user=user, inviter=actor)
    return user


def invite_send(*, user: User, inviter: User, now: datetime | None = None) -> None:
    """Mail (again) the invitation of a user who has not chosen a password yet."""
    if not inviter.is_admin or inviter.account_id != user.account_id:
        raise PermissionDeniedError("Only an account admin can invite users.")
    if user.has_usable_password():
        raise Invalid(f"{user.display_name} has already chosen a password.")
    if not user.is_active:
        raise Invalid(f"{user.display_name} is deactivated. Reactivate them first.")
    _send(
        user,
        "invite",
        {
            "inviter": inviter,
            "link": invite_link(user, now=now),
            "days": max(1, settings.INVITE_MAX_AGE // 86400),
        },
    )


def invite_user_for(uidb64: str, token: str, *, now: datetime | None = None) -> User | None:
    """The invited user a link names, while its token is valid; else None."""
    user = _user_from_uid(uidb64)
    if user is None or not invite_token_check(user, token, now=now):
        return None
    return user


def invite_accept(*, user: User, token: str, password: str) -> User:
    """Set the invited user's first password; the link stops working."""
    with transaction.atomic():
        # The row lock makes two submits of the same link take turns; the second
        # sees the changed password and is refused.
        user = User.objects.select_for_update().get(pk=user.pk)
        if not invite_token_check(user, token):
            raise Invalid("This invitation link has expired or was already used.")
        _check_password(password, user)
        user.set_password(password)
        user.save(update_fields=["password", "updated_at"])
        audit_record(
            account=user.account,
            actor=user,
            action="user.invite_accepted",
            target=user,
            target_repr=user.email,
        )
    return user


def _user_from_uid(uidb64: str) -> User | None:
    from django.utils.http import urlsafe_base64_decode

    try:
        pk = urlsafe_base64_decode(uidb64).decode()
        return User.objects.select_related("account").get(pk=pk)
    except (
        ValueError,
        TypeError,
        OverflowError,
        UnicodeDecodeError,
        ValidationError,
        User.DoesNotExist,
    ):
        return None


def password_reset_mail(user: User) -> None:
    """Mail a user a link to choose a new password (Django's reset token)."""
    path = reverse(
        "password-reset-confirm",
        kwargs={"uidb64": _uid(user), "token": default_token_generator.make_token(user)},
    )
    _send(
        user,
        "password_reset",
        {
            "link": settings.PUBLIC_URL + path,
            "hours": max(1, settings.PASSWORD_RESET_TIMEOUT // 3600),
        },
    )


def password_reset_request(*, email: str) -> None:
    """Forgot password?: mail the link if an active user has this login email.

    Says nothing either way: the page answers the same whether or not anyone has
    this address (no user enumeration)."""
    login_email = normalize_login_email(email)
    user = User.objects.filter(email=login_email, is_active=True).first()
    if user is None or not _reset_mail_allowed(login_email):
        return
    # A refusal is logged; the page must read the same either way.
    with contextlib.suppress(MailNotSent):
        password_reset_mail(user)


def _reset_mail_allowed(login_email: str) -> bool:
    """At most RESET_MAILS_PER_HOUR reset emails to one address: the form is open to
    anyone, and must not become a way to flood someone's inbox."""
    key = "accounts:reset-mails:" + hashlib.sha256(login_email.encode()).hexdigest()
    cache.add(key, 0, timeout=3600)
    try:
        sent = cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, timeout=3600)
        sent = 1
    return sent <= settings.RESET_MAILS_PER_HOUR


def password_reset_send(*, actor: User, user: User, ip: str | None = None) -> None:
    """An admin sends one of their users a password reset link."""
    if not actor.is_admin or actor.account_id != user.account_id:
        raise PermissionDeniedError("Only an account admin can send a password reset.")
    if not user.is_active:
        raise Invalid(f"{user.display_name} is deactivated. Reactivate them first.")
    audit_record(
        account=user.account,
        actor=actor,
        action="user.password_reset_sent",
        target=user,
        target_repr=user.email,
        ip=ip,
    )
    password_reset_mail(user)
