"""The settings pages, through Django's test client (the browser tests drive the flows)."""

import pytest

from audit.models import AuditEvent
from inboxes.models import Inbox, Mailbox

pytestmark = pytest.mark.django_db

ADMIN_PAGES = ["/settings/inboxes/", "/settings/users/", "/settings/audit/"]


def test_pages_need_login(client):
    for url in ["/settings/email/", *ADMIN_PAGES]:
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_a_member_never_sees_admin_pages_or_links(client, member):
    client.force_login(member)
    page = client.get("/settings/email/").content.decode()
    for url in ADMIN_PAGES:
        assert url not in page
        assert client.get(url).status_code == 403
    inbox_count = Inbox.objects.count()
    assert client.post("/settings/inboxes/new/", {"name": "Sneaky"}).status_code == 403
    assert Inbox.objects.count() == inbox_count


def test_admin_pages_render(client, admin):
    client.force_login(admin)
    for url in ["/settings/email/", *ADMIN_PAGES]:
        response = client.get(url)
        assert response.status_code == 200, url
        assert "Content-Security-Policy" in response.headers


def test_connecting_from_the_page_stores_no_readable_password(client, member, connect_payload):
    client.force_login(member)
    payload = connect_payload("bo@acme.example.com")
    form = {"address": payload["address"]}
    for server in ("imap", "smtp"):
        for key, value in payload[server].items():
            form[f"{server}_{key}"] = value
    response = client.post("/settings/email/", form)
    assert response.status_code == 302
    mailbox = Mailbox.objects.get()
    assert mailbox.owner == member
    page = client.get("/settings/email/").content.decode()
    assert "bo@acme.example.com" in page
    assert payload["imap"]["password"] not in page
    assert payload["imap"]["password"].encode() not in bytes(mailbox.secrets_ciphertext)


def test_a_conflict_on_the_page_is_explained_with_the_way_out(
    client, other_member, member_api, connect_payload
):
    member_api.post("/api/v1/mailboxes/", connect_payload("bo@acme.example.com"), format="json")
    client.force_login(other_member)
    payload = connect_payload("BO@acme.example.com")
    form = {"address": payload["address"]}
    for server in ("imap", "smtp"):
        for key, value in payload[server].items():
            form[f"{server}_{key}"] = value
    response = client.post("/settings/email/", form)
    assert response.status_code == 409
    text = response.content.decode()
    assert "already in use in your account" in text
    assert "Ask an account admin" in text
    assert "Bo Lee" not in text
    assert Mailbox.objects.count() == 1


def test_csrf_is_enforced_on_pages(member):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(member)
    response = client.post("/settings/meetings/", {"address": "bo@acme.example.com"})
    assert response.status_code == 403


def test_next_redirects_stay_on_this_site(client, member, member_api, connect_payload):
    mailbox = member_api.post(
        "/api/v1/mailboxes/", connect_payload("bo@acme.example.com"), format="json"
    ).json()
    client.force_login(member)
    response = client.post(
        f"/settings/mailboxes/{mailbox['id']}/disconnect/",
        {"next": "https://evil.example.net/", "confirm": "yes"},
    )
    assert response["Location"] == "/settings/email/"


def test_the_audit_page_shows_refused_conflicts(
    client, admin, member_api, other_member, connect_payload
):
    from tests.support.api import api_client_for

    member_api.post("/api/v1/mailboxes/", connect_payload("bo@acme.example.com"), format="json")
    api_client_for(other_member).post(
        "/api/v1/mailboxes/", connect_payload("bo@acme.example.com"), format="json"
    )
    client.force_login(admin)
    page = client.get("/settings/audit/").content.decode()
    assert "mailbox.connect_refused" in page and "Cy Young" in page
    assert AuditEvent.objects.filter(action="mailbox.connect_refused", ip="127.0.0.1").exists()


def test_the_mailbox_page_shows_the_ledger_and_what_was_kept_raw(
    client, admin, dovecot, mail_user, support
):
    from inboxes.sync import mailbox_sync
    from tests.support.mail import make_email

    _, mailbox = support
    dovecot.deliver(mail_user[0], make_email(subject="Fine"))
    dovecot.deliver(
        mail_user[0], b"Subject: half\r\nContent-Type: multipart/mixed\r\n\r\nno boundary"
    )
    mailbox_sync(mailbox.pk)
    client.force_login(admin)
    page = client.get(f"/settings/mailboxes/{mailbox.pk}/").content.decode()
    assert "Sync ledger" in page and "INBOX" in page
    assert "2 of 2 messages" in page
    row = client.get(f"/settings/mailboxes/{mailbox.pk}/row/")
    assert row.status_code == 200 and "support@acme.example.com" in row.content.decode()


def test_a_member_cannot_open_someone_elses_mailbox_page(
    client, member, admin, dovecot, smtp_server, mail_user
):
    from tests.support.mail import connect_imap_mailbox

    mailbox = connect_imap_mailbox(
        actor=admin,
        dovecot=dovecot,
        smtp_server=smtp_server,
        user=mail_user,
        address="ann@acme.example.com",
        kind="personal",
    )
    client.force_login(member)
    assert client.get(f"/settings/mailboxes/{mailbox.pk}/").status_code == 404
    assert client.post(f"/settings/mailboxes/{mailbox.pk}/resync/").status_code == 404


def test_a_changed_password_is_fixed_from_the_mailbox_page(
    client, member, dovecot, smtp_server, mail_user
):
    from inboxes.credentials import mailbox_secrets
    from inboxes.models import Mailbox
    from inboxes.services import mailbox_test
    from tests.support.mail import connect_imap_mailbox

    mailbox = connect_imap_mailbox(
        actor=member,
        dovecot=dovecot,
        smtp_server=smtp_server,
        user=mail_user,
        address="bo@acme.example.com",
        kind="personal",
    )
    dovecot.add_user(mail_user[0], "the-new-password")
    mailbox_test(actor=member, mailbox=mailbox)
    assert Mailbox.objects.get(pk=mailbox.pk).status == "error"
    client.force_login(member)
    wrong = client.post(
        f"/settings/mailboxes/{mailbox.pk}/passwords/",
        {"imap_password": "still-wrong"},
        follow=True,
    )
    assert "auth" in wrong.content.decode()
    assert Mailbox.objects.get(pk=mailbox.pk).status == "error"
    client.post(
        f"/settings/mailboxes/{mailbox.pk}/passwords/", {"imap_password": "the-new-password"}
    )
    fixed = Mailbox.objects.get(pk=mailbox.pk)
    assert fixed.status == "connected" and fixed.last_error == ""
    assert mailbox_secrets(fixed)["imap_password"] == "the-new-password"
