"""Connecting mailboxes over the API, and the rules R1-R8 as REST clients meet them."""

import pytest

from audit.models import AuditEvent
from inboxes.models import Inbox, Mailbox
from meetings.models import MeetingsConnection
from tests.support.api import api_client_for

pytestmark = pytest.mark.django_db


def connect(client, payload):
    return client.post("/api/v1/mailboxes/", payload, format="json")


def test_a_member_connects_a_personal_imap_mailbox(member_api, member, connect_payload):
    response = connect(member_api, connect_payload("Bo@Acme.example.com"))
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["address"] == "Bo@Acme.example.com"
    assert body["canonical_address"] == "bo@acme.example.com"
    assert body["kind"] == "personal" and body["provider"] == "imap"
    assert body["owner"] == str(member.pk)
    assert body["status"] == "connected" and body["last_error"] == ""
    assert set(body["sync"]) == {"state", "done", "total", "last_synced_at", "last_error"}
    assert body["inbox"] is None
    assert "password" not in response.content.decode().lower()
    mailbox = Mailbox.objects.get(pk=body["id"])
    assert mailbox.owner == member and mailbox.secrets_ciphertext
    assert AuditEvent.objects.filter(action="mailbox.connected", target_id=body["id"]).exists()


def test_no_password_appears_in_any_mailbox_response(member_api, connect_payload):
    payload = connect_payload("bo@acme.example.com")
    created = connect(member_api, payload)
    assert created.status_code == 201, created.json()
    mailbox_id = created.json()["id"]
    secrets = {payload["imap"]["password"], payload["smtp"]["password"]}
    for response in (
        member_api.get("/api/v1/mailboxes/"),
        member_api.get(f"/api/v1/mailboxes/{mailbox_id}/"),
        member_api.post(f"/api/v1/mailboxes/{mailbox_id}/test/"),
    ):
        assert response.status_code == 200
        assert not any(secret in response.content.decode() for secret in secrets)


def test_a_wrong_password_fails_at_the_auth_step_and_saves_nothing(member_api, connect_payload):
    payload = connect_payload("bo@acme.example.com")
    payload["imap"]["password"] = "wrong-password"
    response = connect(member_api, payload)
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "connection_failed"
    assert body["step"] == "auth"
    assert "Authentication failed" in body["detail"]
    assert [s["step"] for s in body["steps"]][:4] == ["dns", "tcp", "tls", "auth"]
    assert "wrong-password" not in response.content.decode()
    assert not Mailbox.objects.exists()


def test_a_wrong_smtp_password_fails_at_the_smtp_step(member_api, connect_payload):
    payload = connect_payload("bo@acme.example.com")
    payload["smtp"]["password"] = "nope"
    response = connect(member_api, payload)
    assert response.status_code == 422
    assert response.json()["step"] == "smtp"
    assert not Mailbox.objects.exists()


def test_private_hosts_are_refused_at_dns_unless_allowed(member_api, connect_payload, settings):
    settings.ALLOW_PRIVATE_MAIL_HOSTS = False
    for host in ("127.1", "2130706433", "::ffff:127.0.0.1", "127.0.0.1"):
        payload = connect_payload("bo@acme.example.com")
        payload["imap"]["host"] = host
        response = connect(member_api, payload)
        assert response.status_code == 422, host
        assert response.json()["step"] == "dns"
        assert response.json()["steps"][-1]["detail"] == "This mail server address can't be used."
    assert not Mailbox.objects.exists()
    assert AuditEvent.objects.filter(action="mailbox.connection_test_failed").count() == 4


# --- R1 personal is personal ----------------------------------------------------------------


def test_r1_another_user_cannot_connect_someones_personal_email(
    member_api, other_member, connect_payload
):
    assert connect(member_api, connect_payload("bo@acme.example.com")).status_code == 201
    response = connect(api_client_for(other_member), connect_payload("BO@acme.example.com"))
    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "address_in_use"
    # R6: Cy is neither an admin nor the holder, so learns only that it is in use
    assert body["conflict"] == {"address": "BO@acme.example.com", "held_as": "personal"}
    assert "Bo Lee" not in response.content.decode()
    assert Mailbox.objects.count() == 1
    assert AuditEvent.objects.filter(action="mailbox.connect_refused").count() == 1


def test_r1_a_user_may_connect_several_personal_emails(member_api, connect_payload):
    assert connect(member_api, connect_payload("bo@acme.example.com")).status_code == 201
    assert connect(member_api, connect_payload("bo.lee@acme.example.com")).status_code == 201
    assert Mailbox.objects.filter(owner__email="bo@acme.example.com").count() == 2


def test_r1_gmail_spellings_are_one_address(member_api, other_member, connect_payload):
    assert connect(member_api, connect_payload("bo.lee@gmail.com")).status_code == 201
    response = connect(api_client_for(other_member), connect_payload("BoLee+crm@googlemail.com"))
    assert response.status_code == 409
    assert response.json()["code"] == "address_in_use"


def test_r1_the_holder_and_admins_are_told_who_holds_it(
    member_api, admin_api, member, connect_payload
):
    assert connect(member_api, connect_payload("bo@acme.example.com")).status_code == 201
    own = connect(member_api, connect_payload("bo@acme.example.com")).json()
    assert own["code"] == "address_in_use"
    assert own["conflict"]["holder"] == {
        "type": "user",
        "id": str(member.pk),
        "name": "Bo Lee",
        "is_active": True,
    }
    assert own["detail"] == "You have already connected bo@acme.example.com."
    seen_by_admin = connect(admin_api, connect_payload("bo@acme.example.com")).json()
    assert seen_by_admin["conflict"]["holder"]["name"] == "Bo Lee"
    assert "connected as personal email by Bo Lee" in seen_by_admin["detail"]


def test_the_same_address_in_another_account_is_independent(
    member_api, outsider_api, connect_payload
):
    assert connect(member_api, connect_payload("shared@example.com")).status_code == 201
    assert connect(outsider_api, connect_payload("shared@example.com")).status_code == 201


# --- R2 one use per address ----------------------------------------------------------------


def test_r2_a_personal_email_cannot_become_a_team_email(member_api, admin_api, connect_payload):
    assert connect(member_api, connect_payload("bo@acme.example.com")).status_code == 201
    response = connect(admin_api, connect_payload("bo@acme.example.com", kind="team"))
    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "address_in_use"
    assert body["conflict"]["held_as"] == "personal"
    assert Mailbox.objects.filter(kind="team").count() == 0


def test_r2_a_team_email_cannot_become_a_personal_email(member_api, admin_api, connect_payload):
    inbox = admin_api.post("/api/v1/inboxes/", {"name": "Support"}, format="json").json()
    created = connect(
        admin_api, connect_payload("support@acme.example.com", kind="team", inbox=inbox["id"])
    )
    assert created.status_code == 201, created.json()
    response = connect(member_api, connect_payload("Support@acme.example.com"))
    assert response.status_code == 409
    assert response.json()["conflict"] == {"address": "Support@acme.example.com", "held_as": "team"}
    seen_by_admin = connect(admin_api, connect_payload("support@acme.example.com"))
    assert "team email of inbox Support" in seen_by_admin.json()["detail"]
    assert seen_by_admin.json()["conflict"]["holder"]["type"] == "inbox"


# --- R3 one inbox per team address ---------------------------------------------------------------


def test_r3_a_team_email_cannot_join_a_second_inbox(admin_api, connect_payload):
    support = admin_api.post("/api/v1/inboxes/", {"name": "Support"}, format="json").json()
    sales = admin_api.post("/api/v1/inboxes/", {"name": "Sales"}, format="json").json()
    mailbox = connect(
        admin_api, connect_payload("help@acme.example.com", kind="team", inbox=support["id"])
    ).json()
    assert mailbox["inbox"] == support["id"]
    response = admin_api.patch(
        f"/api/v1/inboxes/{sales['id']}/", {"mailbox": mailbox["id"]}, format="json"
    )
    assert response.status_code == 409
    assert response.json()["code"] == "team_address_in_other_inbox"
    assert Inbox.objects.get(pk=sales["id"]).mailbox is None
    assert Inbox.objects.get(pk=support["id"]).mailbox_id is not None


def test_r3_a_team_email_connected_without_inbox_is_attached_by_patch(admin_api, connect_payload):
    inbox = admin_api.post("/api/v1/inboxes/", {"name": "Support"}, format="json").json()
    mailbox = connect(admin_api, connect_payload("help@acme.example.com", kind="team")).json()
    response = admin_api.patch(
        f"/api/v1/inboxes/{inbox['id']}/",
        {"mailbox": mailbox["id"], "from_name": "Acme Support"},
        format="json",
    )
    assert response.status_code == 200
    assert response.json()["mailbox"] == mailbox["id"]
    assert response.json()["from_name"] == "Acme Support"


def test_r3_a_personal_email_cannot_feed_an_inbox(admin_api, connect_payload):
    inbox = admin_api.post("/api/v1/inboxes/", {"name": "Support"}, format="json").json()
    mailbox = connect(admin_api, connect_payload("ann@acme.example.com")).json()
    response = admin_api.patch(
        f"/api/v1/inboxes/{inbox['id']}/", {"mailbox": mailbox["id"]}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
    assert Inbox.objects.get(pk=inbox["id"]).mailbox is None


# --- R4 conversations excludes meetings -----------------------------------------------------------


def test_r4_a_team_email_in_conversations_cannot_be_the_meetings_address(
    admin_api, member_api, connect_payload
):
    inbox = admin_api.post("/api/v1/inboxes/", {"name": "Support"}, format="json").json()
    connect(admin_api, connect_payload("support@acme.example.com", kind="team", inbox=inbox["id"]))
    for client in (admin_api, member_api):
        response = client.put(
            "/api/v1/meetings/connection/", {"address": "support@acme.example.com"}, format="json"
        )
        assert response.status_code == 409
        assert response.json()["code"] == "team_address_in_conversations"
    assert not MeetingsConnection.objects.exists()


def test_r4_a_meetings_address_cannot_become_a_team_email(admin_api, member_api, connect_payload):
    # The meetings tool books from one of Bo's own emails; that email is then removed,
    # and the meetings connection alone still holds the address.
    mailbox = connect(member_api, connect_payload("bo@acme.example.com")).json()
    assert (
        member_api.put(
            "/api/v1/meetings/connection/", {"address": "bo@acme.example.com"}, format="json"
        ).status_code
        == 200
    )
    assert member_api.delete(f"/api/v1/mailboxes/{mailbox['id']}/").status_code == 200
    response = connect(admin_api, connect_payload("bo@acme.example.com", kind="team"))
    assert response.status_code == 409
    assert response.json()["conflict"]["held_as"] == "meetings"
    assert "meetings tool of Bo Lee" in response.json()["detail"]


def test_r4_a_users_own_personal_email_with_the_meetings_tool_is_allowed(
    member_api, connect_payload
):
    assert connect(member_api, connect_payload("bo@acme.example.com")).status_code == 201
    response = member_api.put(
        "/api/v1/meetings/connection/", {"address": "bo@acme.example.com"}, format="json"
    )
    assert response.status_code == 200
    assert member_api.get("/api/v1/meetings/connection/").json()["address"] == "bo@acme.example.com"
    # and the other order works too
    assert connect(member_api, connect_payload("bo@acme.example.com")).status_code == 409


def test_r4_someone_elses_email_cannot_be_my_meetings_address(
    member_api, other_member, connect_payload
):
    connect(member_api, connect_payload("bo@acme.example.com"))
    response = api_client_for(other_member).put(
        "/api/v1/meetings/connection/", {"address": "bo@acme.example.com"}, format="json"
    )
    assert response.status_code == 409
    assert response.json()["code"] == "address_in_use"


def test_meetings_connection_can_be_removed(member_api, connect_payload):
    connect(member_api, connect_payload("bo@acme.example.com"))
    assert (
        member_api.put(
            "/api/v1/meetings/connection/", {"address": "bo@acme.example.com"}, format="json"
        ).status_code
        == 200
    )
    assert member_api.delete("/api/v1/meetings/connection/").status_code == 204
    assert member_api.get("/api/v1/meetings/connection/").status_code == 404


# --- R5 inboxes by plan ------------------------------------------------------------------------------


@pytest.mark.parametrize(("plan", "limit"), [("free", 1), ("starter", 2)])
def test_r5_inboxes_are_limited_by_plan(admin_api, account, plan, limit):
    account.plan = plan
    account.save()
    for n in range(limit):
        assert (
            admin_api.post("/api/v1/inboxes/", {"name": f"Inbox {n}"}, format="json").status_code
            == 201
        )
    response = admin_api.post("/api/v1/inboxes/", {"name": "One too many"}, format="json")
    assert response.status_code == 409
    assert response.json()["code"] == "plan_limit_reached"
    assert response.json()["limit"] == limit
    assert Inbox.objects.filter(account=account).count() == limit


def test_r5_the_limit_is_a_setting(admin_api, account, settings):
    account.plan = "free"
    account.save()
    settings.PLAN_INBOX_LIMITS = {**settings.PLAN_INBOX_LIMITS, "free": 3}
    for n in range(3):
        assert (
            admin_api.post("/api/v1/inboxes/", {"name": f"Inbox {n}"}, format="json").status_code
            == 201
        )


# --- R7 orphans can be released ---------------------------------------------------------------------


@pytest.fixture
def orphan(member_api, member, admin_api, connect_payload):
    """Bo connected bo@, then left the company."""
    mailbox = connect(member_api, connect_payload("bo@acme.example.com")).json()
    assert admin_api.post(f"/api/v1/users/{member.pk}/deactivate/").status_code == 200
    return mailbox


def test_r6_a_deactivated_holder_is_named_as_such(orphan, admin_api, connect_payload):
    response = connect(admin_api, connect_payload("bo@acme.example.com"))
    assert response.status_code == 409
    assert response.json()["detail"] == (
        "bo@acme.example.com is already connected as personal email by Bo Lee (deactivated)."
    )
    assert response.json()["conflict"]["holder"]["is_active"] is False


def test_r7_an_admin_releases_a_deactivated_users_address_in_one_step(
    orphan, admin_api, other_member, connect_payload
):
    response = admin_api.post(f"/api/v1/mailboxes/{orphan['id']}/release/")
    assert response.status_code == 200
    assert response.json()["status"] == "disconnected"
    # the history stays: the row is kept, only the address is freed
    assert Mailbox.objects.filter(pk=orphan["id"]).exists()
    assert (
        connect(api_client_for(other_member), connect_payload("bo@acme.example.com")).status_code
        == 201
    )
    assert AuditEvent.objects.filter(action="mailbox.released", target_id=orphan["id"]).exists()


def test_r7_an_active_users_address_cannot_be_released(member_api, admin_api, connect_payload):
    mailbox = connect(member_api, connect_payload("bo@acme.example.com")).json()
    response = admin_api.post(f"/api/v1/mailboxes/{mailbox['id']}/release/")
    assert response.status_code == 400
    assert Mailbox.objects.get(pk=mailbox["id"]).status == "connected"


def test_r7_only_admins_release(orphan, other_member):
    response = api_client_for(other_member).post(f"/api/v1/mailboxes/{orphan['id']}/release/")
    assert response.status_code == 404  # a member cannot even see someone else's mailbox
    assert Mailbox.objects.get(pk=orphan["id"]).status == "connected"


def test_r7_transfer_to_another_user_keeps_the_mailbox_and_its_history(
    orphan, admin_api, other_member
):
    response = admin_api.post(
        f"/api/v1/mailboxes/{orphan['id']}/transfer/", {"user": str(other_member.pk)}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["owner"] == str(other_member.pk)
    assert response.json()["id"] == orphan["id"]
    mine = api_client_for(other_member).get("/api/v1/mailboxes/").json()["results"]
    assert [m["address"] for m in mine] == ["bo@acme.example.com"]


def test_r7_transfer_to_a_deactivated_user_is_refused(orphan, admin_api, member):
    response = admin_api.post(
        f"/api/v1/mailboxes/{orphan['id']}/transfer/", {"user": str(member.pk)}, format="json"
    )
    assert response.status_code == 400
    assert Mailbox.objects.get(pk=orphan["id"]).owner == member


def test_r7_transfer_into_an_inbox_makes_it_a_team_email(orphan, admin_api):
    inbox = admin_api.post("/api/v1/inboxes/", {"name": "Sales"}, format="json").json()
    refused = admin_api.post(
        f"/api/v1/mailboxes/{orphan['id']}/transfer/", {"inbox": inbox["id"]}, format="json"
    )
    assert refused.status_code == 400  # R8: acknowledgement required
    response = admin_api.post(
        f"/api/v1/mailboxes/{orphan['id']}/transfer/",
        {"inbox": inbox["id"], "acknowledge_team_visibility": True},
        format="json",
    )
    assert response.status_code == 200
    assert response.json()["kind"] == "team" and response.json()["owner"] is None
    assert response.json()["inbox"] == inbox["id"]


def test_r7_transfer_into_an_inbox_respects_r4(orphan, admin_api, member, other_member):
    # Bo's own meetings hold would go with the move (tests/inboxes/test_release_holds.py);
    # someone else's (data from before R1 covered the meetings tool) blocks it.
    MeetingsConnection.objects.create(
        account=member.account,
        user=other_member,
        address="bo@acme.example.com",
        canonical_address="bo@acme.example.com",
    )
    inbox = admin_api.post("/api/v1/inboxes/", {"name": "Sales"}, format="json").json()
    response = admin_api.post(
        f"/api/v1/mailboxes/{orphan['id']}/transfer/",
        {"inbox": inbox["id"], "acknowledge_team_visibility": True},
        format="json",
    )
    assert response.status_code == 409
    assert response.json()["code"] == "team_address_in_conversations"
    assert Mailbox.objects.get(pk=orphan["id"]).kind == "personal"


def test_r7_reactivate_then_disconnect_also_frees_the_address(
    orphan, admin_api, member, member_api, other_member, connect_payload
):
    assert admin_api.post(f"/api/v1/users/{member.pk}/reactivate/").status_code == 200
    assert (
        member_api.delete(f"/api/v1/mailboxes/{orphan['id']}/").json()["status"] == "disconnected"
    )
    assert (
        connect(api_client_for(other_member), connect_payload("bo@acme.example.com")).status_code
        == 201
    )


# --- R8 team mail is team-visible ---------------------------------------------------------------------


def test_r8_a_team_email_needs_the_visibility_acknowledgement(admin_api, connect_payload):
    payload = connect_payload("support@acme.example.com", kind="team")
    payload["acknowledge_team_visibility"] = False
    response = connect(admin_api, payload)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
    assert "acknowledge_team_visibility" in response.json()["errors"]
    assert not Mailbox.objects.exists()


def test_team_emails_are_admin_only(member_api, connect_payload):
    response = connect(member_api, connect_payload("support@acme.example.com", kind="team"))
    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"
    assert not Mailbox.objects.exists()


# --- Check, test, update, disconnect ------------------------------------------------------------------


def test_check_reports_availability_without_side_effects(member_api, other_member, connect_payload):
    free = member_api.post(
        "/api/v1/mailboxes/check/",
        {"address": "bo@acme.example.com", "kind": "personal"},
        format="json",
    )
    assert free.status_code == 200
    assert free.json()["available"] is True and free.json()["conflict"] is None
    connect(member_api, connect_payload("bo@acme.example.com"))
    taken = api_client_for(other_member).post(
        "/api/v1/mailboxes/check/",
        {"address": "Bo@acme.example.com", "kind": "personal"},
        format="json",
    )
    assert taken.json() == {
        "available": False,
        "conflict": {"address": "Bo@acme.example.com", "held_as": "personal"},
        "detail": taken.json()["detail"],
    }
    assert Mailbox.objects.count() == 1


def test_rerunning_the_test_records_failure_and_recovery(
    member_api, connect_payload, dovecot, mail_user
):
    mailbox = connect(member_api, connect_payload("bo@acme.example.com")).json()
    ok = member_api.post(f"/api/v1/mailboxes/{mailbox['id']}/test/")
    assert ok.status_code == 200
    assert ok.json()["ok"] is True
    assert [s["step"] for s in ok.json()["steps"]] == [
        "dns",
        "tcp",
        "tls",
        "auth",
        "imap_select",
        "smtp",
    ]
    # the password changes on the server
    dovecot.add_user(mail_user[0], "changed-on-the-server")
    failed = member_api.post(f"/api/v1/mailboxes/{mailbox['id']}/test/")
    assert failed.status_code == 422
    assert failed.json()["step"] == "auth"
    shown = member_api.get(f"/api/v1/mailboxes/{mailbox['id']}/").json()
    assert shown["status"] == "error" and shown["last_error"].startswith("auth:")
    # the user fixes it with only the new password
    fixed = member_api.patch(
        f"/api/v1/mailboxes/{mailbox['id']}/",
        {"imap": {"password": "changed-on-the-server"}},
        format="json",
    )
    assert fixed.status_code == 200, fixed.json()
    assert fixed.json()["status"] == "connected" and fixed.json()["last_error"] == ""


def test_disconnect_keeps_the_row_and_frees_the_address(member_api, other_member, connect_payload):
    mailbox = connect(member_api, connect_payload("bo@acme.example.com")).json()
    response = member_api.delete(f"/api/v1/mailboxes/{mailbox['id']}/")
    assert response.status_code == 200
    assert response.json()["status"] == "disconnected"
    stored = Mailbox.objects.get(pk=mailbox["id"])
    assert stored.secrets_ciphertext is None and stored.disconnected_at is not None
    assert (
        connect(api_client_for(other_member), connect_payload("bo@acme.example.com")).status_code
        == 201
    )


def test_a_member_cannot_disconnect_a_team_email(admin_api, member_api, connect_payload):
    mailbox = connect(admin_api, connect_payload("support@acme.example.com", kind="team")).json()
    assert member_api.delete(f"/api/v1/mailboxes/{mailbox['id']}/").status_code == 404
    assert Mailbox.objects.get(pk=mailbox["id"]).status == "connected"
