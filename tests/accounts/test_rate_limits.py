"""Failed logins and failed connection tests are limited per user and per IP;
successful work from many people behind one address is not."""

import pytest
from rest_framework.test import APIClient

from inboxes.models import Mailbox
from tests.support.api import api_client_for
from tests.support.factories import UserFactory

pytestmark = pytest.mark.django_db


def token_attempt(email, password, ip="203.0.113.7"):
    return APIClient().post(
        "/api/v1/auth/token/", {"email": email, "password": password}, format="json", REMOTE_ADDR=ip
    )


def test_repeated_failed_logins_lock_the_address_even_with_the_right_password(
    member, password, settings
):
    settings.AXES_FAILURE_LIMIT = 3
    for _ in range(2):
        assert token_attempt(member.email, "wrong").status_code == 401
    assert token_attempt(member.email, "wrong").status_code == 429  # the third failure locks
    locked = token_attempt(member.email, password)
    assert locked.status_code == 429
    assert locked.json()["code"] == "rate_limited"
    # From another IP the address is still locked (per user) ...
    assert token_attempt(member.email, password, ip="198.51.100.9").status_code == 429


def test_failed_logins_from_one_ip_lock_that_ip_for_everyone(account, password, settings):
    settings.AXES_FAILURE_LIMIT = 3
    users = [UserFactory(account=account) for _ in range(4)]
    for user in users[:2]:
        assert token_attempt(user.email, "wrong", ip="192.0.2.50").status_code == 401
    assert token_attempt(users[2].email, "wrong", ip="192.0.2.50").status_code == 429
    assert token_attempt(users[3].email, password, ip="192.0.2.50").status_code == 429
    assert token_attempt(users[3].email, password, ip="192.0.2.51").status_code == 200


def test_many_successful_logins_behind_one_office_nat_are_never_blocked(
    account, password, settings
):
    settings.AXES_FAILURE_LIMIT = 3
    users = [UserFactory(account=account) for _ in range(10)]
    for user in users:
        assert token_attempt(user.email, password, ip="192.0.2.80").status_code == 200


def test_the_web_login_form_is_limited_too(member, password, settings, client):
    settings.AXES_FAILURE_LIMIT = 2
    response = client.post("/login/", {"username": member.email, "password": "wrong"})
    assert response.status_code == 200  # the form again, with an error
    assert b"Please enter a correct" in response.content
    assert (
        client.post("/login/", {"username": member.email, "password": "wrong"}).status_code == 429
    )
    locked = client.post("/login/", {"username": member.email, "password": password})
    assert locked.status_code == 429
    assert b"Too many failed login attempts" in locked.content


def test_failed_connection_tests_are_limited_per_user(member, connect_payload, settings):
    settings.CONNECTION_TEST_RATE_PER_USER = "3/h"
    api = api_client_for(member)
    bad = connect_payload("bo@acme.example.com")
    bad["imap"]["password"] = "wrong"
    for _ in range(3):
        assert api.post("/api/v1/mailboxes/", bad, format="json").status_code == 422
    limited = api.post("/api/v1/mailboxes/", connect_payload("bo@acme.example.com"), format="json")
    assert limited.status_code == 429
    assert limited.json()["code"] == "rate_limited"
    assert not Mailbox.objects.exists()


def test_failed_connection_tests_are_limited_per_ip_but_successes_are_not_counted(
    account, connect_payload, settings
):
    settings.CONNECTION_TEST_RATE_PER_IP = "3/h"
    office = [api_client_for(UserFactory(account=account)) for _ in range(6)]
    # six people behind one NAT connect successfully: nobody is blocked
    for n, api in enumerate(office):
        response = api.post(
            "/api/v1/mailboxes/",
            connect_payload(f"p{n}@acme.example.com"),
            format="json",
            REMOTE_ADDR="192.0.2.10",
        )
        assert response.status_code == 201, response.json()
    # three failures from that address close it for connection tests
    bad = connect_payload("probe@acme.example.com")
    bad["imap"]["port"] = 1
    for api in office[:3]:
        assert (
            api.post("/api/v1/mailboxes/", bad, format="json", REMOTE_ADDR="192.0.2.10").status_code
            == 422
        )
    blocked = office[4].post(
        "/api/v1/mailboxes/",
        connect_payload("late@acme.example.com"),
        format="json",
        REMOTE_ADDR="192.0.2.10",
    )
    assert blocked.status_code == 429
