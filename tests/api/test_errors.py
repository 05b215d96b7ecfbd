"""No input gives a 500, and every error has DESIGN.md 4's shape: ``{"code", "detail"}``.

Deeply nested JSON, made-up cursors, bad query parameters, bodies over the upload
limit, URLs that match nothing, and bugs: each answers JSON with a code under /api/,
while the pages keep their HTML.
"""

from __future__ import annotations

import base64
import json
import socket

import pytest
from django.test import Client
from rest_framework.test import APIClient

from conversations.models import Conversation
from inboxes.models import Inbox
from tests.support.api import api_client_for
from tests.support.conversations_factory import make_conversation

pytestmark = pytest.mark.django_db


def no_raise(client: APIClient) -> APIClient:
    """Answer as a server would, with Django's handler500, instead of raising in the test."""
    client.raise_request_exception = False
    return client


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = json.loads(response.content)
    assert body["code"] == code and isinstance(body["detail"], str) and body["detail"], body
    return body


@pytest.fixture
def inbox(account):
    return Inbox.objects.create(account=account, name="Support")


# --- Unreadable bodies ---------------------------------------------------------------------------


def test_json_nested_a_thousand_levels_deep_is_a_400_not_a_500():
    body = "[" * 1000 + "]" * 1000  # 2 KB, no login needed
    response = no_raise(APIClient()).post(
        "/api/v1/auth/token/", body, content_type="application/json"
    )
    error = assert_error(response, 400, "invalid")
    assert "nested too deeply" in error["detail"]


def test_deep_json_is_refused_by_every_json_endpoint_not_only_the_token_one(admin):
    body = '{"name": ' + "[" * 5000 + "]" * 5000 + "}"
    response = no_raise(api_client_for(admin)).post(
        "/api/v1/inboxes/", body, content_type="application/json"
    )
    assert_error(response, 400, "invalid")


def test_a_body_that_is_not_json_is_invalid_with_the_errors_key():
    response = APIClient().post("/api/v1/auth/token/", "{nope", content_type="application/json")
    assert assert_error(response, 400, "invalid")["errors"] == {}


def test_a_body_over_the_upload_limit_is_a_json_413_too_large(admin, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = no_raise(api_client_for(admin)).post(
        "/api/v1/inboxes/", {"name": "x" * 2000}, format="json"
    )
    error = assert_error(response, 413, "too_large")
    assert "1000 bytes" in error["detail"]
    assert not Inbox.objects.exists()


def test_a_body_over_the_upload_limit_without_login_is_a_json_413_too(settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = no_raise(APIClient()).post(
        "/api/v1/auth/token/", {"email": "x" * 2000, "password": "x"}, format="json"
    )
    assert_error(response, 413, "too_large")


# --- Cursors -------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["/api/v1/users/", "/api/v1/audit/", "/api/v1/conversations/"])
def test_a_made_up_cursor_is_400_invalid_with_a_clear_detail(admin, url):
    made_up = base64.b64encode(b"p=x").decode()
    response = no_raise(api_client_for(admin)).get(url, {"cursor": made_up})
    error = assert_error(response, 400, "invalid")
    assert "cursor" in error["detail"] and error["errors"] == {"cursor": ["Not a valid cursor."]}


def test_an_unreadable_cursor_is_400_invalid_not_404(admin):
    response = api_client_for(admin).get("/api/v1/users/", {"cursor": "r=x"})
    assert_error(response, 400, "invalid")


def test_the_next_link_of_a_page_still_leads_to_the_next_page(admin, inbox, account):
    for _ in range(3):
        make_conversation(inbox)
    client = api_client_for(admin)
    first = client.get("/api/v1/conversations/", {"page_size": 2}).json()
    second = client.get(first["next"]).json()
    seen = [c["id"] for c in first["results"] + second["results"]]
    assert sorted(seen) == sorted(
        str(pk) for pk in Conversation.objects.values_list("pk", flat=True)
    )


# --- Query parameters ----------------------------------------------------------------------------


@pytest.mark.parametrize("days", ["abc", "1e3", "-5", "0", "91", "9" * 30])
def test_metrics_days_that_is_not_1_to_90_is_400_invalid_with_field_errors(admin, inbox, days):
    response = no_raise(api_client_for(admin)).get(
        f"/api/v1/inboxes/{inbox.pk}/metrics/", {"days": days}
    )
    assert "days" in assert_error(response, 400, "invalid")["errors"]


def test_metrics_days_defaults_to_14(admin, inbox):
    body = api_client_for(admin).get(f"/api/v1/inboxes/{inbox.pk}/metrics/").json()
    assert len(body["days"]) == 14


# --- Django's own error answers ------------------------------------------------------------------


def test_an_unknown_api_url_is_a_json_404_and_an_unknown_page_stays_html(admin, client):
    assert_error(api_client_for(admin).get("/api/v1/nothing-here/"), 404, "not_found")
    client.force_login(admin)
    page = client.get("/nothing-here/")
    assert page.status_code == 404 and page["Content-Type"].startswith("text/html")


def test_a_bug_under_api_is_a_json_500_and_on_a_page_stays_html(admin, monkeypatch):
    from accounts.api import MeView

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(MeView, "get", broken)
    assert_error(no_raise(api_client_for(admin)).get("/api/v1/me/"), 500, "server_error")

    from core import error_pages

    monkeypatch.setattr(error_pages, "_is_api", lambda request: False)
    page = Client(raise_request_exception=False)
    page.force_login(admin)
    response = page.get("/api/v1/me/")
    assert response.status_code == 500 and response["Content-Type"].startswith("text/html")


def test_djangos_400_and_403_answers_are_json_under_api_and_html_elsewhere(rf):
    from django.core.exceptions import PermissionDenied, SuspiciousOperation

    from core import error_pages

    for handler, exception, status, code in (
        (error_pages.bad_request, SuspiciousOperation(), 400, "invalid"),
        (error_pages.permission_denied, PermissionDenied(), 403, "permission_denied"),
    ):
        assert_error(handler(rf.get("/api/v1/me/"), exception), status, code)
        page = handler(rf.get("/settings/"), exception)
        assert page.status_code == status and page["Content-Type"].startswith("text/html")


def test_a_failed_connection_test_without_a_client_address_is_422_not_500(member, monkeypatch):
    # RATELIMIT_IP_META_KEY names a proxy header a direct request lacks, or no REMOTE_ADDR.
    def no_dns(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "no such host")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    server = {"host": "mail.invalid", "port": 993, "security": "ssl", "username": "bo"}
    response = no_raise(api_client_for(member)).post(
        "/api/v1/mailboxes/",
        {
            "address": "bo@acme.example.com",
            "kind": "personal",
            "provider": "imap",
            "imap": {**server, "password": "x"},
            "smtp": {**server, "port": 465, "password": "x"},
        },
        format="json",
        REMOTE_ADDR="",
    )
    assert_error(response, 422, "connection_failed")


def test_a_host_django_refuses_is_a_json_400_under_api_and_html_on_pages(client):
    response = no_raise(APIClient()).get("/api/v1/me/", HTTP_HOST="evil.example")
    assert assert_error(response, 400, "invalid")["errors"] == {}
    page = Client(raise_request_exception=False).get("/login/", HTTP_HOST="evil.example")
    assert page.status_code == 400 and page["Content-Type"].startswith("text/html")
