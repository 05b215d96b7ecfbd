from __future__ import annotations

from typing import Any, ClassVar

from django.contrib.auth.base_user import AbstractBaseUser, BaseUserManager
from django.contrib.auth.models import PermissionsMixin
from django.db import models

from core.models import BaseModel


class Plan(models.TextChoices):
    FREE = "free"
    STARTER = "starter"
    PROFESSIONAL = "professional"
    ENTERPRISE = "enterprise"


class Account(BaseModel):
    """A company: the tenant every other row belongs to."""

    name = models.CharField(max_length=200)
    plan = models.CharField(max_length=20, choices=Plan.choices, default=Plan.FREE)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Role(models.TextChoices):
    ADMIN = "admin"
    MEMBER = "member"


class UserManager(BaseUserManager["User"]):
    use_in_migrations = True

    def create_user(self, email: str, password: str | None = None, **fields: Any) -> User:
        user = self.model(email=normalize_login_email(email), **fields)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_superuser(self, email: str, password: str | None = None, **fields: Any) -> User:
        fields.setdefault("is_staff", True)
        fields.setdefault("is_superuser", True)
        fields.setdefault("role", Role.ADMIN)
        if "account" not in fields and "account_id" not in fields:
            fields["account"] = Account.objects.create(name="Operators")
        return self.create_user(email, password, **fields)


def normalize_login_email(email: str) -> str:
    # Login emails are compared case-insensitively; they are not mailbox addresses
    # (those use inboxes.addresses.canonical_address).
    return email.strip().lower()


class User(BaseModel, AbstractBaseUser, PermissionsMixin):
    """A person in one account. Deactivation keeps the row, mailboxes and history."""

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="users")
    email = models.EmailField(unique=True)
    full_name = models.CharField(max_length=200, blank=True)
    role = models.CharField(max_length=20, choices=Role.choices, default=Role.MEMBER)
    is_active = models.BooleanField(default=True)
    # Django admin access is for operators only, never granted through the product.
    is_staff = models.BooleanField(default=False)
    deactivated_at = models.DateTimeField(null=True, blank=True)
    # Routing skips people who are away (conversations/routing.py).
    is_available = models.BooleanField(default=True)

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS: ClassVar[list[str]] = []

    class Meta:
        ordering = ["full_name", "email"]

    def __str__(self) -> str:
        return self.display_name

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN and self.is_active

    @property
    def display_name(self) -> str:
        return self.full_name or self.email


class Team(BaseModel):
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="teams")
    name = models.CharField(max_length=200)
    members = models.ManyToManyField(User, related_name="teams", blank=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["account", "name"], name="unique_team_name_per_account")
        ]

    def __str__(self) -> str:
        return self.name


class ApiToken(BaseModel):
    """A named API token a user made on Settings > API tokens.

    Only a hash of the key is kept: the key itself is shown once, when it is made.
    A revoked token stays listed (and in the audit log) but no longer signs anyone in.
    """

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    key_hash = models.CharField(max_length=64, unique=True)
    # The first characters of the key, so a user can tell their tokens apart.
    prefix = models.CharField(max_length=12)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None
