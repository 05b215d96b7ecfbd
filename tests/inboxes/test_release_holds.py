"""R7 frees every hold: releasing or transferring a deactivated user's address frees the
meetings tool's hold on it too, and an address held by the meetings tool alone can be
released as well (over the API and on Settings > Users)."""

import pytest

from audit.models import AuditEvent
from inboxes import services as mailbox_services
from inboxes.models import Mailbox
from meetings.models import MeetingsConnection
from tests.support.api import api_client_for

pytestmark = pytest.mark.django_db

BO = "bo@acme.example.com"


def connect(client, payload):
    return client.post("/api/v1/mailboxes/", payload, format="json")


def use_for_meetings(client, address=BO):
    response = client.put("/api/v1/meetings/connection/", {"address": address}, format="json")
    assert response.status_code == 200, response.json()


def deactivate(admin_api, user):
    assert admin_api.post(f"/api/v1/users/{user.pk}/deactivate/").status_code == 200


@pytest.fixture
def orphan(member_api, member, admin_api, connect_payload):
    """Bo connected bo@ as his personal email and to the meetings tool, then left."""
    mailbox = connect(member_api, connect_payload(BO)).json()
    use_for_meetings(member_api)
    deactivate(admin_api, member)
    return mailbox


@pytest.fixture
def meetings_only(member_api, member, admin_api, connect_payload):
    """Bo used bo@ for the meetings tool, removed it as his email (the meetings tool
    keeps it), then left."""
    mailbox = connect(member_api, connect_payload(BO)).json()
    use_for_meetings(member_api)
    assert member_api.delete(f"/api/v1/mailboxes/{mailbox['id']}/").status_code == 200
    deactivate(admin_api, member)


# --- releasing or transferring a mailbox frees the meetings hold ----------------------------------


def test_releasing_a_deactivated_users_mailbox_frees_his_meetings_hold_in_the_same_step(
    orphan, admin_api, member, other_member, connect_payload
):
    response = admin_api.post(f"/api/v1/mailboxes/{orphan['id']}/release/")
    assert response.status_code == 200

    assert not MeetingsConnection.objects.filter(user=member).exists()
    cys = connect(api_client_for(other_member), connect_payload(BO))
    assert cys.status_code == 201, cys.json()
    released = AuditEvent.objects.get(action="meetings.released")
    assert released.data["address"] == BO and released.target_repr == BO
    assert released.actor_name == "Ann Smith"
    assert AuditEvent.objects.get(action="mailbox.released").data["tools"] == ["meetings"]


def test_a_release_that_fails_half_way_frees_nothing(orphan, admin, member, monkeypatch):
    def broken_audit(**kwargs):
        raise RuntimeError("the audit log is unavailable")

    monkeypatch.setattr(mailbox_services, "audit_record", broken_audit)
    with pytest.raises(RuntimeError):
        mailbox_services.mailbox_release(actor=admin, mailbox=Mailbox.objects.get(pk=orphan["id"]))
    assert Mailbox.objects.get(pk=orphan["id"]).status == "connected"
    assert MeetingsConnection.objects.filter(user=member).exists()
    assert not AuditEvent.objects.filter(action="meetings.released").exists()


def test_transferring_to_another_user_frees_the_previous_owners_meetings_hold(
    orphan, admin_api, member, other_member
):
    response = admin_api.post(
        f"/api/v1/mailboxes/{orphan['id']}/transfer/", {"user": str(other_member.pk)}, format="json"
    )
    assert response.status_code == 200, response.json()
    assert response.json()["owner"] == str(other_member.pk)
    assert not MeetingsConnection.objects.filter(user=member).exists()
    assert AuditEvent.objects.filter(action="meetings.released", target_repr=BO).exists()
    assert AuditEvent.objects.get(action="mailbox.transferred").data["tools"] == ["meetings"]
    # the new owner may now use his personal email with the meetings tool
    use_for_meetings(api_client_for(other_member))


def test_transferring_into_an_inbox_frees_the_previous_owners_meetings_hold(
    orphan, admin_api, member
):
    inbox = admin_api.post("/api/v1/inboxes/", {"name": "Sales"}, format="json").json()
    response = admin_api.post(
        f"/api/v1/mailboxes/{orphan['id']}/transfer/",
        {"inbox": inbox["id"], "acknowledge_team_visibility": True},
        format="json",
    )
    assert response.status_code == 200, response.json()
    assert response.json()["kind"] == "team" and response.json()["inbox"] == inbox["id"]
    assert not MeetingsConnection.objects.filter(user=member).exists()
    assert AuditEvent.objects.filter(action="meetings.released", target_repr=BO).exists()


def test_a_refused_transfer_keeps_the_meetings_hold(orphan, admin_api, member):
    response = admin_api.post(
        f"/api/v1/mailboxes/{orphan['id']}/transfer/", {"user": str(member.pk)}, format="json"
    )
    assert response.status_code == 400  # to a deactivated user
    assert MeetingsConnection.objects.filter(user=member).exists()
    assert not AuditEvent.objects.filter(action="meetings.released").exists()


# --- an address held by the meetings tool alone --------------------------------------------------


def test_a_meetings_only_hold_of_a_deactivated_user_is_named_as_such(
    meetings_only, admin_api, other_member, connect_payload
):
    response = connect(admin_api, connect_payload(BO))
    assert response.status_code == 409
    body = response.json()
    assert body["detail"] == f"{BO} is already meetings tool of Bo Lee (deactivated)."
    assert body["conflict"]["held_as"] == "meetings"
    assert body["conflict"]["holder"]["is_active"] is False
    # other members learn only that it is in use
    hidden = connect(api_client_for(other_member), connect_payload(BO)).json()
    assert hidden["conflict"] == {"address": BO, "held_as": "meetings"}
    assert "Bo Lee" not in hidden["detail"]


def test_an_admin_releases_a_meetings_only_hold_through_the_users_api(
    meetings_only, admin_api, member, other_member, connect_payload
):
    response = admin_api.post(
        f"/api/v1/users/{member.pk}/release/", {"address": "Bo@Acme.example.com"}, format="json"
    )
    assert response.status_code == 200, response.json()
    assert response.json()["released"] == [{"held_as": "meetings"}]
    assert not MeetingsConnection.objects.exists()
    assert AuditEvent.objects.filter(action="meetings.released", target_repr=BO).exists()
    assert connect(api_client_for(other_member), connect_payload(BO)).status_code == 201


def test_the_users_api_releases_a_mailbox_and_its_meetings_hold_in_one_step(
    orphan, admin_api, member
):
    response = admin_api.post(f"/api/v1/users/{member.pk}/release/", {"address": BO}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["released"] == [
        {"held_as": "personal", "mailbox": orphan["id"]},
        {"held_as": "meetings"},
    ]
    assert Mailbox.objects.get(pk=orphan["id"]).status == "disconnected"
    assert not MeetingsConnection.objects.exists()
    assert AuditEvent.objects.filter(action="mailbox.released").count() == 1
    assert AuditEvent.objects.filter(action="meetings.released").count() == 1


def test_an_active_users_meetings_hold_cannot_be_released(
    admin_api, member_api, member, connect_payload
):
    connect(member_api, connect_payload(BO))
    use_for_meetings(member_api)
    response = admin_api.post(f"/api/v1/users/{member.pk}/release/", {"address": BO}, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
    assert MeetingsConnection.objects.filter(user=member).exists()


def test_only_admins_release_a_users_holds(meetings_only, member, other_member):
    response = api_client_for(other_member).post(
        f"/api/v1/users/{member.pk}/release/", {"address": BO}, format="json"
    )
    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"
    assert MeetingsConnection.objects.filter(user=member).exists()
    assert AuditEvent.objects.filter(action="address.release_refused").exists()


def test_releasing_what_a_user_does_not_hold_or_another_accounts_user_is_refused(
    meetings_only, admin_api, member, outsider, outsider_api
):
    nothing = admin_api.post(
        f"/api/v1/users/{member.pk}/release/", {"address": "else@acme.example.com"}, format="json"
    )
    assert nothing.status_code == 400 and nothing.json()["code"] == "invalid"
    assert "address" in nothing.json()["errors"]
    assert admin_api.post(f"/api/v1/users/{member.pk}/release/", {}, format="json").status_code == (
        400
    )
    bad = admin_api.post(f"/api/v1/users/{member.pk}/release/", {"address": "x"}, format="json")
    assert bad.status_code == 400 and bad.json()["code"] == "invalid"
    other_account = outsider_api.post(
        f"/api/v1/users/{member.pk}/release/", {"address": BO}, format="json"
    )
    assert other_account.status_code == 404 and other_account.json()["code"] == "not_found"
    assert MeetingsConnection.objects.filter(user=member).exists()


# --- Settings > Users and the conflict on Settings > Email ----------------------------------------


def test_settings_users_shows_a_meetings_only_hold_and_releases_it(
    client, admin, member, meetings_only
):
    client.force_login(admin)
    page = client.get("/settings/users/").content.decode()
    row = page[page.index(f'id="user-{member.pk}"') :]
    row = row[: row.index("</tr>")]
    assert BO in row and "Meetings tool" in row
    assert f'action="/settings/users/{member.pk}/release/"' in row

    response = client.post(f"/settings/users/{member.pk}/release/", {"address": BO}, follow=True)
    text = response.content.decode()
    assert f"{BO} is released and can be connected again." in text
    assert not MeetingsConnection.objects.exists()
    row = text[text.index(f'id="user-{member.pk}"') :]
    assert "None" in row[: row.index("</tr>")]
    assert AuditEvent.objects.filter(action="meetings.released", target_repr=BO).exists()


def test_settings_users_says_the_meetings_hold_goes_with_the_mailbox(client, admin, member, orphan):
    client.force_login(admin)
    page = client.get("/settings/users/").content.decode()
    line = page[page.index(f'id="user-mailbox-{orphan["id"]}"') :]
    line = line[: line.index("</form>")]
    assert "Also used by the meetings tool: released or transferred with it." in line
    assert "tool-hold" not in page  # no second line for the same address

    client.post(f"/settings/mailboxes/{orphan['id']}/release/")
    assert Mailbox.objects.get(pk=orphan["id"]).status == "disconnected"
    assert not MeetingsConnection.objects.exists()


def test_a_member_cannot_release_from_settings_users(client, member, other_member, meetings_only):
    client.force_login(other_member)
    response = client.post(f"/settings/users/{member.pk}/release/", {"address": BO})
    assert response.status_code == 403
    assert MeetingsConnection.objects.exists()


def test_the_conflict_on_settings_email_offers_to_release_a_meetings_only_hold(
    client, admin, member, meetings_only, connect_payload
):
    client.force_login(admin)
    payload = connect_payload(BO)
    form = {"address": BO}
    for server in ("imap", "smtp"):
        for key, value in payload[server].items():
            form[f"{server}_{key}"] = value
    response = client.post("/settings/email/", form)
    assert response.status_code == 409
    text = response.content.decode()
    assert "meetings tool of Bo Lee (deactivated)" in text
    assert f'action="/settings/users/{member.pk}/release/"' in text
    assert f"Release {BO}" in text

    released = client.post(
        f"/settings/users/{member.pk}/release/", {"address": BO, "next": "/settings/email/"}
    )
    assert released["Location"] == "/settings/email/"
    assert client.post("/settings/email/", form).status_code == 302
    assert Mailbox.objects.exclude(status="disconnected").get().owner == admin
