"""The failed-connection-test limiter: it says when to come back, and it never
answers for a permission check (a 403 or 404 comes first, however often asked)."""

import pytest

from tests.support.mail import connect_imap_mailbox

pytestmark = pytest.mark.django_db


@pytest.fixture
def exhaust(settings, connect_payload):
    """Use up a user's failed connection tests (one allowed) with a refused port."""

    def run(api, address):
        settings.CONNECTION_TEST_RATE_PER_USER = "1/h"
        bad = connect_payload(address)
        bad["imap"]["port"] = 1
        assert api.post("/api/v1/mailboxes/", bad, format="json").status_code == 422
        limited = api.post("/api/v1/mailboxes/", connect_payload(address), format="json")
        assert limited.status_code == 429
        return limited

    return run


@pytest.fixture
def bos_mailbox(member, dovecot, smtp_server, mail_user):
    return connect_imap_mailbox(
        actor=member,
        dovecot=dovecot,
        smtp_server=smtp_server,
        user=mail_user,
        address="bo@acme.example.com",
        kind="personal",
    )


def form_of(payload):
    form = {"address": payload["address"]}
    for server in ("imap", "smtp"):
        for key, value in payload[server].items():
            form[f"{server}_{key}"] = value
    return form


def test_a_connection_test_limit_says_when_to_try_again(
    client, member, member_api, exhaust, connect_payload
):
    limited = exhaust(member_api, "bo@acme.example.com")
    assert limited.json()["code"] == "rate_limited"
    assert limited.json()["detail"]
    assert 0 < int(limited["Retry-After"]) <= 3600
    client.force_login(member)
    page = client.post("/settings/email/", form_of(connect_payload("bo@acme.example.com")))
    assert page.status_code == 429
    assert 0 < int(page["Retry-After"]) <= 3600


def test_a_member_over_the_limit_poking_someone_elses_mailbox_gets_404_never_429(
    client, other_member, bos_mailbox, exhaust
):
    from tests.support.api import api_client_for

    cy = api_client_for(other_member)
    exhaust(cy, "cy@acme.example.com")
    for _ in range(5):
        tested = cy.post(f"/api/v1/mailboxes/{bos_mailbox.pk}/test/")
        assert tested.status_code == 404, tested.json()
        assert tested.json()["code"] == "not_found"
        changed = cy.patch(
            f"/api/v1/mailboxes/{bos_mailbox.pk}/", {"imap": {"password": "x"}}, format="json"
        )
        assert changed.status_code == 404, changed.json()
    client.force_login(other_member)
    assert client.post(f"/settings/mailboxes/{bos_mailbox.pk}/test/").status_code == 404
    assert (
        client.post(
            f"/settings/mailboxes/{bos_mailbox.pk}/passwords/", {"imap_password": "x"}
        ).status_code
        == 404
    )


def test_an_admin_over_the_limit_changing_a_members_mailbox_is_refused_not_throttled(
    client, admin, admin_api, bos_mailbox, exhaust
):
    exhaust(admin_api, "ann@acme.example.com")
    for _ in range(3):
        changed = admin_api.patch(
            f"/api/v1/mailboxes/{bos_mailbox.pk}/", {"imap": {"password": "x"}}, format="json"
        )
        assert changed.status_code == 403, changed.json()
        assert changed.json()["code"] == "permission_denied"
    client.force_login(admin)
    page = client.post(
        f"/settings/mailboxes/{bos_mailbox.pk}/passwords/", {"imap_password": "x"}, follow=True
    ).content.decode()
    assert "Only the owner can change" in page
    assert "Too many failed connection tests" not in page


def test_a_member_over_the_limit_connecting_a_team_email_is_refused_not_throttled(
    member_api, exhaust, connect_payload
):
    exhaust(member_api, "bo@acme.example.com")
    team = member_api.post(
        "/api/v1/mailboxes/", connect_payload("sales@acme.example.com", kind="team"), format="json"
    )
    assert team.status_code == 403, team.json()
    assert team.json()["code"] == "permission_denied"
