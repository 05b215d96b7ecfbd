"""Signed-in pages and API answers carry ``Cache-Control: no-store``."""

import pytest

pytestmark = pytest.mark.django_db


def test_a_signed_in_page_is_never_stored_by_a_cache(client, member):
    client.force_login(member)
    response = client.get("/settings/email/")
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"


def test_api_answers_are_never_stored_by_a_cache(member_api, client):
    me = member_api.get("/api/v1/me/")
    assert me.status_code == 200
    assert me["Cache-Control"] == "no-store"
    refused = client.get("/api/v1/me/")  # an error answer, without a login
    assert refused.status_code == 401
    assert refused["Cache-Control"] == "no-store"


def test_a_view_that_sets_its_own_cache_control_keeps_it(client):
    login = client.get("/login/")
    assert "no-store" in login["Cache-Control"]
    assert "private" in login["Cache-Control"]  # Django's never_cache, left as it is


def test_pages_for_visitors_without_a_session_are_left_alone(client):
    response = client.get("/no-such-page/")
    assert "Cache-Control" not in response
    assert "Cookie" not in response.get("Vary", "")  # the session was not even opened
