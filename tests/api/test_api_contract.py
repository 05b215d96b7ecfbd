"""The REST contract of DESIGN.md section 4: auth, users, errors, tenants, schema."""

import pytest
from rest_framework.test import APIClient

from accounts.models import User
from audit.models import AuditEvent
from inboxes.models import Inbox, Mailbox
from meetings.models import MeetingsConnection

pytestmark = pytest.mark.django_db


def test_token_from_email_and_password(member, password):
    response = APIClient().post(
        "/api/v1/auth/token/", {"email": "BO@acme.example.com", "password": password}, format="json"
    )
    assert response.status_code == 200
    token = response.json()["token"]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    me = client.get("/api/v1/me/").json()
    assert me["email"] == "bo@acme.example.com"
    assert me["account"]["name"] == "Acme" and me["role"] == "member"


def test_a_wrong_password_gets_no_token(member):
    response = APIClient().post(
        "/api/v1/auth/token/", {"email": member.email, "password": "x"}, format="json"
    )
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"
    assert "token" not in response.json()


def test_no_credentials_answer_401_not_authenticated():
    response = APIClient().get("/api/v1/me/")
    assert response.status_code == 401
    assert response.json() == {"code": "not_authenticated", "detail": response.json()["detail"]}


def test_session_auth_works_and_enforces_csrf(member):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(member)
    assert client.get("/api/v1/me/").status_code == 200
    response = client.post("/api/v1/inboxes/", {"name": "X"}, format="json")
    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]


def test_admin_creates_a_member_who_can_then_log_in(admin_api):
    response = admin_api.post(
        "/api/v1/users/",
        {
            "email": "Dee@acme.example.com",
            "full_name": "Dee Dee",
            "role": "member",
            "password": "a long enough passphrase",
        },
        format="json",
    )
    assert response.status_code == 201
    assert response.json()["email"] == "dee@acme.example.com"
    assert "password" not in response.json()
    token = APIClient().post(
        "/api/v1/auth/token/",
        {"email": "dee@acme.example.com", "password": "a long enough passphrase"},
        format="json",
    )
    assert token.status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "not-an-email", "password": "a long enough passphrase"}, "email"),
        (
            {
                "email": "x@acme.example.com",
                "password": "a long enough passphrase",
                "role": "owner",
            },
            "role",
        ),
        ({"email": "x@acme.example.com", "password": "123"}, "password"),
        ({"email": "x@acme.example.com"}, "password"),
        ({"email": "bo@acme.example.com", "password": "a long enough passphrase"}, "email"),
    ],
)
def test_user_creation_validates_input(admin_api, member, body, field):
    before = User.objects.count()
    response = admin_api.post("/api/v1/users/", body, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
    assert field in response.json()["errors"]
    assert User.objects.count() == before


def test_members_cannot_manage_users(member_api, other_member):
    assert member_api.get("/api/v1/users/").status_code == 200
    created = member_api.post(
        "/api/v1/users/",
        {"email": "x@acme.example.com", "password": "a long enough passphrase"},
        format="json",
    )
    assert created.status_code == 403 and created.json()["code"] == "permission_denied"
    assert member_api.post(f"/api/v1/users/{other_member.pk}/deactivate/").status_code == 403
    assert User.objects.get(pk=other_member.pk).is_active


def test_deactivation_blocks_tokens_and_login_at_once_and_reactivation_restores(
    admin_api, member, member_api, password
):
    assert member_api.get("/api/v1/me/").status_code == 200
    response = admin_api.post(f"/api/v1/users/{member.pk}/deactivate/")
    assert response.status_code == 200 and response.json()["is_active"] is False
    assert member_api.get("/api/v1/me/").status_code == 401
    assert (
        APIClient()
        .post("/api/v1/auth/token/", {"email": member.email, "password": password}, format="json")
        .status_code
        == 401
    )
    assert admin_api.post(f"/api/v1/users/{member.pk}/reactivate/").status_code == 200
    assert member_api.get("/api/v1/me/").status_code == 200
    actions = list(
        AuditEvent.objects.filter(target_id=str(member.pk)).values_list("action", flat=True)
    )
    assert actions == ["user.reactivated", "user.deactivated"]


def test_deactivated_users_sessions_end_at_once(admin_api, member):
    browser = APIClient()
    browser.force_login(member)
    assert browser.get("/api/v1/me/").status_code == 200
    admin_api.post(f"/api/v1/users/{member.pk}/deactivate/")
    assert browser.get("/api/v1/me/").status_code in (401, 403)


def test_an_admin_cannot_deactivate_themselves(admin_api, admin):
    assert admin_api.post(f"/api/v1/users/{admin.pk}/deactivate/").status_code == 400
    assert User.objects.get(pk=admin.pk).is_active


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"address": "not an address", "kind": "personal"}, "address"),
        ({"address": "a@example.com", "kind": "shared"}, "kind"),
        ({"address": "a@example.com", "kind": "personal", "provider": "aol"}, "provider"),
        ({"kind": "personal"}, "address"),
        ({"address": "a@example.com", "kind": "personal"}, "imap"),
        (
            {
                "address": "a@example.com",
                "kind": "personal",
                "imap": {
                    "host": "h",
                    "port": "not a number",
                    "security": "ssl",
                    "username": "u",
                    "password": "p",
                },
            },
            "imap",
        ),
        (
            {
                "address": "a@example.com",
                "kind": "personal",
                "imap": {
                    "host": "h",
                    "port": 993,
                    "security": "tls13",
                    "username": "u",
                    "password": "p",
                },
            },
            "imap",
        ),
        ({"address": ["a@example.com"], "kind": "personal"}, "address"),
        (
            {
                "address": "a@example.com",
                "kind": "personal",
                "acknowledge_team_visibility": "maybe",
            },
            "acknowledge_team_visibility",
        ),
    ],
)
def test_mailbox_input_is_validated(member_api, body, field):
    response = member_api.post("/api/v1/mailboxes/", body, format="json")
    assert response.status_code == 400, response.json()
    assert response.json()["code"] == "invalid"
    assert field in response.json()["errors"]
    assert not Mailbox.objects.exists()


def test_oauth_providers_point_to_their_connect_flow(member_api):
    response = member_api.post(
        "/api/v1/mailboxes/",
        {"address": "a@example.com", "kind": "personal", "provider": "gmail"},
        format="json",
    )
    assert response.status_code == 400
    assert "/connect/gmail/" in response.json()["detail"]


def test_malformed_json_is_invalid(member_api):
    response = member_api.generic(
        "POST", "/api/v1/mailboxes/", "{not json", content_type="application/json"
    )
    assert response.status_code == 400
    assert response.json()["code"] == "invalid"


def test_unknown_ids_answer_not_found(member_api):
    response = member_api.get("/api/v1/mailboxes/00000000-0000-0000-0000-000000000000/")
    assert response.status_code == 404
    assert response.json() == {"code": "not_found", "detail": "Not found."}


def test_lists_are_cursor_paginated(admin_api, account):
    from tests.support.factories import UserFactory

    for _ in range(5):
        UserFactory(account=account)
    first = admin_api.get("/api/v1/users/?page_size=2").json()
    assert len(first["results"]) == 2 and first["next"]
    second = admin_api.get(first["next"]).json()
    assert len(second["results"]) == 2
    assert not {u["id"] for u in first["results"]} & {u["id"] for u in second["results"]}


# --- Tenant isolation ---------------------------------------------------------------------


@pytest.fixture
def their_objects(outsider):
    """Another account's user, mailbox, inbox."""
    mailbox = Mailbox.objects.create(
        account=outsider.account,
        owner=outsider,
        kind="personal",
        address="olga@globex.example.com",
        canonical_address="olga@globex.example.com",
        imap_host="imap.globex.example.com",
    )
    inbox = Inbox.objects.create(account=outsider.account, name="Globex Support")
    MeetingsConnection.objects.create(
        account=outsider.account,
        user=outsider,
        address="olga@globex.example.com",
        canonical_address="olga@globex.example.com",
    )
    return {"user": outsider, "mailbox": mailbox, "inbox": inbox}


def test_another_accounts_ids_answer_404_on_every_endpoint(admin_api, their_objects):
    user, mailbox, inbox = (
        their_objects["user"].pk,
        their_objects["mailbox"].pk,
        their_objects["inbox"].pk,
    )
    calls = [
        ("get", f"/api/v1/users/{user}/", None),
        ("post", f"/api/v1/users/{user}/deactivate/", None),
        ("post", f"/api/v1/users/{user}/reactivate/", None),
        ("get", f"/api/v1/mailboxes/{mailbox}/", None),
        ("patch", f"/api/v1/mailboxes/{mailbox}/", {"imap": {"password": "x"}}),
        ("delete", f"/api/v1/mailboxes/{mailbox}/", None),
        ("post", f"/api/v1/mailboxes/{mailbox}/release/", None),
        ("post", f"/api/v1/mailboxes/{mailbox}/test/", None),
        ("post", f"/api/v1/mailboxes/{mailbox}/transfer/", {"inbox": str(inbox)}),
        ("get", f"/api/v1/inboxes/{inbox}/", None),
        ("patch", f"/api/v1/inboxes/{inbox}/", {"name": "Mine now"}),
        ("delete", f"/api/v1/inboxes/{inbox}/", None),
    ]
    for method, url, body in calls:
        response = getattr(admin_api, method)(url, body, format="json")
        assert response.status_code == 404, (method, url, response.status_code)
        assert response.json()["code"] == "not_found"
    assert Inbox.objects.get(pk=inbox).name == "Globex Support"
    assert Mailbox.objects.get(pk=mailbox).status == "connected"
    assert User.objects.get(pk=user).is_active


def test_another_accounts_ids_cannot_be_referenced_in_bodies(admin_api, admin, their_objects):
    own_inbox = admin_api.post("/api/v1/inboxes/", {"name": "Support"}, format="json").json()
    response = admin_api.patch(
        f"/api/v1/inboxes/{own_inbox['id']}/",
        {"mailbox": str(their_objects["mailbox"].pk)},
        format="json",
    )
    assert response.status_code == 404
    assert Inbox.objects.get(pk=own_inbox["id"]).mailbox is None


def test_lists_show_only_the_own_account(admin_api, their_objects):
    for url in ("/api/v1/users/", "/api/v1/mailboxes/", "/api/v1/inboxes/", "/api/v1/audit/"):
        text = admin_api.get(url).content.decode()
        assert "globex" not in text.lower(), url
    assert admin_api.get("/api/v1/meetings/connection/").status_code == 404


# --- Audit ----------------------------------------------------------------------------------------


def test_audit_log_is_admin_only_and_newest_first(admin_api, member_api, member):
    admin_api.post("/api/v1/inboxes/", {"name": "Support"}, format="json")
    admin_api.post(f"/api/v1/users/{member.pk}/deactivate/")
    assert member_api.get("/api/v1/audit/").status_code == 401  # deactivated now
    entries = admin_api.get("/api/v1/audit/").json()["results"]
    assert [e["action"] for e in entries] == ["user.deactivated", "inbox.created"]
    assert entries[0]["actor_name"] == "Ann Smith"
    assert entries[0]["ip"] == "127.0.0.1"


def test_members_cannot_read_the_audit_log(member_api):
    response = member_api.get("/api/v1/audit/")
    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"


def test_inbox_crud_and_from_name(admin_api, member_api):
    created = admin_api.post("/api/v1/inboxes/", {"name": "Support"}, format="json")
    assert created.status_code == 201
    inbox = created.json()
    assert set(inbox) >= {"id", "name", "mailbox", "from_name", "created_at"}
    patched = admin_api.patch(
        f"/api/v1/inboxes/{inbox['id']}/", {"from_name": "Acme Support"}, format="json"
    )
    assert patched.json()["from_name"] == "Acme Support"
    assert member_api.get(f"/api/v1/inboxes/{inbox['id']}/").status_code == 200
    assert (
        member_api.patch(
            f"/api/v1/inboxes/{inbox['id']}/", {"name": "X"}, format="json"
        ).status_code
        == 403
    )
    duplicate = admin_api.post("/api/v1/inboxes/", {"name": "Support"}, format="json")
    assert duplicate.status_code == 400 and "name" in duplicate.json()["errors"]
    assert admin_api.delete(f"/api/v1/inboxes/{inbox['id']}/").status_code == 204
    assert not Inbox.objects.exists()


# --- OpenAPI ----------------------------------------------------------------------------------------


def test_openapi_schema_and_docs_are_served(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    for path in (
        "/api/v1/auth/token/",
        "/api/v1/me/",
        "/api/v1/users/",
        "/api/v1/mailboxes/",
        "/api/v1/mailboxes/check/",
        "/api/v1/mailboxes/{id}/release/",
        "/api/v1/mailboxes/{id}/test/",
        "/api/v1/inboxes/",
        "/api/v1/inboxes/{id}/",
        "/api/v1/meetings/connection/",
        "/api/v1/audit/",
        "/api/v1/users/{id}/deactivate/",
        "/api/v1/users/{id}/reactivate/",
    ):
        assert path in paths, path
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    assert b"swagger" in docs.content.lower()


def test_the_openapi_schema_validates_without_warnings(tmp_path):
    from django.core.management import call_command

    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "s.yaml"))
    assert "/api/v1/mailboxes/{id}/transfer/" in (tmp_path / "s.yaml").read_text()


def test_admins_manage_teams_members_read_them(
    admin_api, member_api, member, other_member, outsider
):
    created = admin_api.post(
        "/api/v1/teams/", {"name": "Tier 1", "members": [str(member.pk)]}, format="json"
    )
    assert created.status_code == 201
    team = created.json()
    assert team["members"] == [str(member.pk)]
    assert member_api.post("/api/v1/teams/", {"name": "Mine"}, format="json").status_code == 403
    assert [t["name"] for t in member_api.get("/api/v1/teams/").json()["results"]] == ["Tier 1"]
    patched = admin_api.patch(
        f"/api/v1/teams/{team['id']}/",
        {"members": [str(member.pk), str(other_member.pk)]},
        format="json",
    )
    assert set(patched.json()["members"]) == {str(member.pk), str(other_member.pk)}
    foreign = admin_api.patch(
        f"/api/v1/teams/{team['id']}/", {"members": [str(outsider.pk)]}, format="json"
    )
    assert foreign.status_code == 404
    duplicate = admin_api.post("/api/v1/teams/", {"name": "Tier 1"}, format="json")
    assert duplicate.status_code == 400 and "name" in duplicate.json()["errors"]
    assert admin_api.delete(f"/api/v1/teams/{team['id']}/").status_code == 204
