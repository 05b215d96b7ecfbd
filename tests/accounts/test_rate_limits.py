"""Failed logins and failed connection tests are limited per user and per IP;
successful work from many people behind one address is not."""

import pytest
from django.test import Client
from rest_framework.test import APIClient

from inboxes.models import Mailbox
from tests.support.api import api_client_for
from tests.support.factories import UserFactory

pytestmark = pytest.mark.django_db


def token_attempt(email, password, ip="203.0.113.7"):
    return APIClient().post(
        "/api/v1/auth/token/", {"email": email, "password": password}, format="json", REMOTE_ADDR=ip
    )


def web_attempt(email, password, ip="203.0.113.7"):
    return Client().post("/login/", {"username": email, "password": password}, REMOTE_ADDR=ip)


def test_repeated_failed_logins_lock_the_address_from_that_ip_even_with_the_right_password(
    member, password, settings
):
    settings.AXES_FAILURE_LIMIT = 3
    for _ in range(2):
        assert token_attempt(member.email, "wrong").status_code == 401
    assert token_attempt(member.email, "wrong").status_code == 429  # the third failure locks
    locked = token_attempt(member.email, password)
    assert locked.status_code == 429
    assert locked.json()["code"] == "rate_limited"
    assert web_attempt(member.email, password).status_code == 429  # the form shares the count
    # The owner, from another address (home, phone), is not locked out by one attacker.
    assert token_attempt(member.email, password, ip="198.51.100.9").status_code == 200


def test_the_web_form_and_the_token_endpoint_count_failures_together(member, password, settings):
    settings.AXES_FAILURE_LIMIT = 3
    assert web_attempt(member.email, "wrong").status_code == 200
    assert token_attempt(member.email, "wrong").status_code == 401
    assert web_attempt(member.email, "wrong").status_code == 429
    assert token_attempt(member.email, password).status_code == 429


def test_another_user_behind_the_same_ip_can_still_log_in_after_one_address_is_locked(
    member, other_member, password, settings
):
    settings.AXES_FAILURE_LIMIT = 3
    for _ in range(3):
        token_attempt(member.email, "wrong", ip="192.0.2.50")
    assert token_attempt(member.email, password, ip="192.0.2.50").status_code == 429
    assert token_attempt(other_member.email, password, ip="192.0.2.50").status_code == 200
    signed_in = web_attempt(other_member.email, password, ip="192.0.2.50")
    assert signed_in.status_code == 302, signed_in.content
    # and the locked address stays locked from there
    assert web_attempt(member.email, password, ip="192.0.2.50").status_code == 429


def test_an_address_failing_from_many_ips_is_locked_everywhere_past_the_address_limit(
    member, password, settings
):
    settings.AXES_FAILURE_LIMIT = 3
    settings.LOGIN_ADDRESS_FAILURE_LIMIT = 6
    ips = [f"198.51.100.{n}" for n in range(1, 7)]
    for ip in ips[:5]:
        assert token_attempt(member.email, "wrong", ip=ip).status_code == 401
    assert token_attempt(member.email, password, ip="203.0.113.99").status_code == 200
    for ip in ips:  # the successful login cleared the address's count
        token_attempt(member.email, "wrong", ip=ip)
    assert token_attempt(member.email, password, ip="203.0.113.99").status_code == 429
    assert web_attempt(member.email, password, ip="203.0.113.98").status_code == 429


def test_hammering_a_locked_address_from_one_ip_does_not_lock_the_owner_out_elsewhere(
    member, password, settings
):
    settings.AXES_FAILURE_LIMIT = 3
    settings.LOGIN_ADDRESS_FAILURE_LIMIT = 6
    for _ in range(12):
        token_attempt(member.email, "wrong", ip="192.0.2.90")
        web_attempt(member.email, "wrong", ip="192.0.2.90")
    assert token_attempt(member.email, password, ip="192.0.2.90").status_code == 429
    assert token_attempt(member.email, password, ip="198.51.100.20").status_code == 200


def test_an_ip_failing_across_many_addresses_is_locked_past_the_ip_limit(
    account, password, settings
):
    settings.AXES_FAILURE_LIMIT = 3
    settings.LOGIN_IP_FAILURE_LIMIT = 6
    users = [UserFactory(account=account) for _ in range(7)]
    for user in users[:5]:
        assert token_attempt(user.email, "wrong", ip="192.0.2.66").status_code == 401
    # five failures from one address: an office mistyping, nobody is locked out
    assert token_attempt(users[6].email, password, ip="192.0.2.66").status_code == 200
    assert token_attempt(users[5].email, "wrong", ip="192.0.2.66").status_code == 429
    # the sixth failure locks the IP for every address, the web form included
    assert token_attempt(users[6].email, password, ip="192.0.2.66").status_code == 429
    assert web_attempt(users[6].email, password, ip="192.0.2.66").status_code == 429
    # but not the people it guessed at, from their own addresses
    assert token_attempt(users[0].email, password, ip="192.0.2.67").status_code == 200


def test_a_successful_login_does_not_clear_the_failures_counted_against_the_ip(
    account, password, settings
):
    settings.AXES_FAILURE_LIMIT = 3
    settings.LOGIN_IP_FAILURE_LIMIT = 4
    users = [UserFactory(account=account) for _ in range(5)]
    for user in users[:3]:
        token_attempt(user.email, "wrong", ip="192.0.2.70")
    # a prober holding one real login cannot wipe its slate by signing in
    assert token_attempt(users[4].email, password, ip="192.0.2.70").status_code == 200
    assert token_attempt(users[3].email, "wrong", ip="192.0.2.70").status_code == 429


def test_a_login_lockout_says_when_to_try_again(member, password, settings):
    settings.AXES_FAILURE_LIMIT = 2
    settings.AXES_COOLOFF_TIME = 15 / 60
    token_attempt(member.email, "wrong")
    token_attempt(member.email, "wrong")
    api = token_attempt(member.email, password)
    assert api.status_code == 429
    assert api.json()["code"] == "rate_limited"
    assert api.json()["detail"]
    assert 0 < int(api["Retry-After"]) <= 15 * 60
    page = web_attempt(member.email, password)
    assert page.status_code == 429
    assert 0 < int(page["Retry-After"]) <= 15 * 60


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
