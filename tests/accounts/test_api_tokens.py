"""Settings > API tokens: a user makes, names and revokes their own tokens; a key is
shown once; the API takes a live token and refuses a revoked one."""

import re

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from accounts.models import ApiToken
from audit.models import AuditEvent

pytestmark = pytest.mark.django_db


def _make(client, name: str) -> str:
    response = client.post("/settings/tokens/", {"name": name})
    assert response.status_code == 201
    [key] = re.findall(r'id="new-token-key">([^<]+)<', response.content.decode())
    return key


def _api(key: str) -> APIClient:
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return api


def test_a_user_makes_a_named_token_shown_once_and_the_api_takes_it(client, member):
    client.force_login(member)
    key = _make(client, "Reporting script")

    token = ApiToken.objects.get(user=member)
    assert token.name == "Reporting script"
    assert key not in (token.key_hash, token.prefix) and key.startswith(token.prefix)
    listing = client.get("/settings/tokens/").content.decode()
    assert "Reporting script" in listing and key not in listing
    assert 'href="/api/docs/"' in listing

    response = _api(key).get("/api/v1/me/")
    assert response.status_code == 200 and response.json()["email"] == member.email
    token.refresh_from_db()
    assert token.last_used_at is not None
    assert AuditEvent.objects.filter(action="api_token.created", actor=member).exists()


def test_a_revoked_token_is_refused_by_the_api(client, member):
    client.force_login(member)
    key = _make(client, "CI")
    token = ApiToken.objects.get(user=member)

    # The revoke link asks first, and asking changes nothing
    confirm = client.get(f"/settings/tokens/{token.pk}/revoke/")
    assert confirm.status_code == 200 and "Revoke token CI?" in confirm.content.decode()
    assert _api(key).get("/api/v1/me/").status_code == 200

    assert client.post(f"/settings/tokens/{token.pk}/revoke/").status_code == 302
    token.refresh_from_db()
    assert token.revoked_at is not None
    response = _api(key).get("/api/v1/me/")
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"
    assert AuditEvent.objects.filter(action="api_token.revoked", actor=member).count() == 1


def test_someone_elses_token_cannot_be_revoked(client, member, other_member):
    client.force_login(other_member)
    _make(client, "Cy's")
    token = ApiToken.objects.get(user=other_member)
    client.force_login(member)
    assert client.post(f"/settings/tokens/{token.pk}/revoke/").status_code == 404
    token.refresh_from_db()
    assert token.revoked_at is None


def test_a_token_of_a_deactivated_user_is_refused(client, member):
    client.force_login(member)
    key = _make(client, "Old")
    member.is_active = False
    member.save()
    assert _api(key).get("/api/v1/me/").status_code == 401


def test_a_token_needs_a_name(client, member):
    client.force_login(member)
    response = client.post("/settings/tokens/", {"name": "   "})
    assert response.status_code == 400
    assert not ApiToken.objects.exists()


def test_the_login_token_is_listed_and_can_be_revoked(client, member, member_api):
    assert member_api.get("/api/v1/me/").status_code == 200
    client.force_login(member)
    assert 'id="login-token"' in client.get("/settings/tokens/").content.decode()
    assert client.post("/settings/tokens/login-token/revoke/").status_code == 302
    assert not Token.objects.filter(user=member).exists()
    assert member_api.get("/api/v1/me/").status_code == 401


def test_the_token_endpoint_still_answers_as_the_contract_says(client, member, password):
    response = client.post(
        "/api/v1/auth/token/",
        {"email": member.email, "password": password},
        content_type="application/json",
    )
    assert response.status_code == 200 and set(response.json()) == {"token"}
    assert _api(response.json()["token"]).get("/api/v1/me/").status_code == 200
