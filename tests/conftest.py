"""Shared fixtures: an account with an admin (Ann) and a member (Bo), an outsider
from another account, API clients for each, the real mail servers, and a Support
inbox connected to a Dovecot mailbox (``support``; a test module may define its own)."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from accounts.models import Role
from tests.support.api import api_client_for
from tests.support.factories import PASSWORD, AccountFactory, UserFactory
from tests.support.mail import connect_imap_mailbox, team_inbox

pytest_plugins = ["tests.support.mailservers", "tests.support.oauth_mailservers"]

# Hypothesis judges speed by the wall clock: on a busy two-core CI machine a correct
# test would fail its "too slow" check or deadline. Speed is measured in bench/.
hypothesis_settings.register_profile(
    "postkamer", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
hypothesis_settings.load_profile("postkamer")


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    """Rate-limit counters live in the cache, which outlives a test's transaction."""
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def account(db):
    return AccountFactory(name="Acme", plan="professional")


@pytest.fixture
def admin(account):
    return UserFactory(
        account=account, email="ann@acme.example.com", full_name="Ann Smith", role=Role.ADMIN
    )


@pytest.fixture
def member(account):
    return UserFactory(account=account, email="bo@acme.example.com", full_name="Bo Lee")


@pytest.fixture
def other_member(account):
    return UserFactory(account=account, email="cy@acme.example.com", full_name="Cy Young")


@pytest.fixture
def outsider(db):
    other = AccountFactory(name="Globex", plan="professional")
    return UserFactory(
        account=other, email="olga@globex.example.com", full_name="Olga Out", role=Role.ADMIN
    )


@pytest.fixture
def admin_api(admin):
    return api_client_for(admin)


@pytest.fixture
def member_api(member):
    return api_client_for(member)


@pytest.fixture
def outsider_api(outsider):
    return api_client_for(outsider)


@pytest.fixture
def password():
    return PASSWORD


def server_dict(settings) -> dict:
    return {
        "host": settings.host,
        "port": settings.port,
        "security": settings.security,
        "username": settings.username,
        "password": settings.password,
    }


@pytest.fixture
def connect_payload(dovecot, smtp_server, mail_user):
    """Build the body of ``POST /api/v1/mailboxes/`` for a real Dovecot/aiosmtpd user."""

    def build(address: str, kind: str = "personal", **extra) -> dict:
        username, user_password = mail_user
        return {
            "address": address,
            "kind": kind,
            "provider": "imap",
            "imap": server_dict(dovecot.imap_settings(username, user_password)),
            "smtp": server_dict(smtp_server.smtp_settings(username, user_password)),
            **({"acknowledge_team_visibility": True} if kind == "team" else {}),
            **extra,
        }

    return build


@pytest.fixture
def support(admin, dovecot, smtp_server, mail_user):
    """The Support team inbox and its mailbox (support@acme.example.com on Dovecot)."""
    inbox = team_inbox(admin.account)
    mailbox = connect_imap_mailbox(
        actor=admin,
        dovecot=dovecot,
        smtp_server=smtp_server,
        user=mail_user,
        address="support@acme.example.com",
        inbox=inbox,
    )
    return inbox, mailbox
