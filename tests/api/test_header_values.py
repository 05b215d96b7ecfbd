"""Values that end up in email headers (from-names, people's and team names) are one
line: the services refuse line breaks and other control characters where the value
enters, for the API and the pages alike, so a reply can't carry an extra ``Bcc:``
header or fail on the way out."""

from __future__ import annotations

import pytest

from accounts.models import Team, User
from inboxes.models import Inbox, Mailbox, Message
from tests.support.conversations_factory import make_conversation

pytestmark = pytest.mark.django_db

INJECTED = "Sup\r\nBcc: x@y"
CONTROL = ["Sup\r\nBcc: x@y", "Sup\nport", "Sup\rport", "Sup\tport", "Sup\x85port", "Sup\u2028port"]


@pytest.fixture
def support(account):
    mailbox = Mailbox.objects.create(
        account=account,
        kind="team",
        address="support@acme.example.com",
        canonical_address="support@acme.example.com",
        imap_host="imap.acme.example.com",
    )
    return Inbox.objects.create(
        account=account, name="Support", mailbox=mailbox, from_name="Acme Support"
    )


def assert_invalid(response, field: str) -> None:
    assert response.status_code == 400, response.content[:300]
    body = response.json()
    assert body["code"] == "invalid" and "line breaks" in body["detail"]
    assert field in body["errors"]


@pytest.mark.parametrize("from_name", CONTROL)
def test_the_api_refuses_a_from_name_with_a_line_break_or_control_character(
    admin_api, support, from_name
):
    response = admin_api.patch(
        f"/api/v1/inboxes/{support.pk}/", {"from_name": from_name}, format="json"
    )
    assert_invalid(response, "from_name")
    support.refresh_from_db()
    assert support.from_name == "Acme Support"


def test_the_api_refuses_a_new_inbox_whose_name_or_from_name_has_a_line_break(admin_api):
    assert_invalid(
        admin_api.post("/api/v1/inboxes/", {"name": "Sales", "from_name": INJECTED}, format="json"),
        "from_name",
    )
    assert_invalid(admin_api.post("/api/v1/inboxes/", {"name": "Sa\nles"}, format="json"), "name")
    assert not Inbox.objects.exists()


def test_a_from_name_without_control_characters_is_still_saved(admin_api, support):
    response = admin_api.patch(
        f"/api/v1/inboxes/{support.pk}/", {"from_name": "Åcme Support – Ñ 👋"}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["from_name"] == "Åcme Support – Ñ 👋"


def test_the_settings_pages_refuse_a_from_name_with_a_line_break(client, admin, support):
    client.force_login(admin)
    response = client.post(
        f"/settings/inboxes/{support.pk}/replies/", {"from_name": INJECTED, "signature": ""}
    )
    assert response.status_code == 400
    assert "line breaks" in response.content.decode()
    response = client.post(
        f"/settings/inboxes/{support.pk}/settings/", {"from_name": INJECTED}, follow=True
    )
    assert "line breaks" in response.content.decode()
    support.refresh_from_db()
    assert support.from_name == "Acme Support"


def test_the_settings_page_still_saves_a_signature_of_several_lines(client, admin, support):
    client.force_login(admin)
    client.post(
        f"/settings/inboxes/{support.pk}/replies/",
        {"from_name": "Acme", "signature": "The Acme team\r\nsupport@acme.example.com"},
    )
    support.refresh_from_db()
    assert support.signature == "The Acme team\r\nsupport@acme.example.com"


def test_a_from_name_stored_with_a_line_break_before_goes_out_on_one_line(member_api, support):
    # Given a from-name saved before the services refused line breaks
    Inbox.objects.filter(pk=support.pk).update(from_name=INJECTED)
    conversation = make_conversation(support)

    # When someone replies
    response = member_api.post(
        f"/api/v1/conversations/{conversation.pk}/replies/", {"text": "On it."}, format="json"
    )

    # Then the reply is queued, with the name on one line and no header added
    assert response.status_code == 201, response.content[:300]
    assert response.json()["from"]["name"] == "Sup Bcc: x@y"
    with Message.objects.get(pk=response.json()["id"]).raw.open("rb") as raw:
        headers = raw.read().split(b"\r\n\r\n", 1)[0]
    assert b"\nBcc:" not in headers


def test_the_api_and_the_users_page_refuse_a_full_name_with_a_line_break(admin_api, admin, client):
    user = {"email": "dee@acme.example.com", "role": "member"}
    password = "a long enough passphrase"
    response = admin_api.post(
        "/api/v1/users/", {**user, "full_name": INJECTED, "password": password}, format="json"
    )
    assert_invalid(response, "full_name")
    client.force_login(admin)
    page = client.post(
        "/settings/users/new/", {**user, "full_name": INJECTED, "password": password}
    )
    assert page.status_code == 400 and "control characters" in page.content.decode()
    assert not User.objects.filter(email="dee@acme.example.com").exists()


def test_a_team_name_with_a_line_break_is_refused(admin_api):
    assert_invalid(admin_api.post("/api/v1/teams/", {"name": "Tier\n1"}, format="json"), "name")
    assert not Team.objects.exists()
