"""Show original: ``GET /api/v1/messages/{id}/raw/`` and the web route answer the
stored bytes exactly as received, to anyone who may read the message (the engine's
reader hook, filled by conversations and crm), and 404 to everyone else."""

from __future__ import annotations

import pytest
from django.utils import timezone

from accounts.models import Role, Team
from crm.models import Contact, Email
from inboxes.mime import parse_message
from inboxes.models import Direction, Inbox, Mailbox, MailboxFolder, Message
from inboxes.providers.base import RawMessage
from inboxes.sync.ingest import ingest_batch, message_from_parsed
from tests.support.api import api_client_for
from tests.support.factories import UserFactory

pytestmark = pytest.mark.django_db

# Bytes a re-serialising parser would change: LF and CRLF mixed, trailing spaces,
# an undeclared Latin-1 byte, a folded header, no final newline.
RAW = (
    b"Return-Path: <carol@customer.example.com>\r\n"
    b"From: Carol <carol@customer.example.com>\r\n"
    b"To: support@acme.example.com\r\n"
    b"Subject: Caf\xe9 order  \r\n"
    b"Message-ID: <raw1@customer.example.com>\r\n"
    b"X-Long: one\r\n\ttwo\n"
    b"\r\n"
    b"<b>not html to a browser</b>\r\n\r\nBye  "
)


def ingest_into(mailbox: Mailbox, raw: bytes) -> Message:
    folder, _ = MailboxFolder.objects.get_or_create(mailbox=mailbox, role="inbox", name="INBOX")
    ingest_batch(
        mailbox=mailbox,
        folder=folder,
        raws=[RawMessage(key="1", raw=raw)],
        cursor={},
        backfill=False,
    )
    return Message.objects.get(account_id=mailbox.account_id, subject__startswith="Caf")


@pytest.fixture
def world(account, admin):
    """Support, an inbox only its team sees; Ann in that team, Bo not."""
    mailbox = Mailbox.objects.create(
        account=account,
        kind="team",
        address="support@acme.example.com",
        canonical_address="support@acme.example.com",
    )
    inbox = Inbox.objects.create(account=account, name="Support", mailbox=mailbox, restricted=True)
    team = Team.objects.create(account=account, name="Support team")
    inbox.visible_to_teams.add(team)
    ann = UserFactory(account=account, role=Role.MEMBER)
    bo = UserFactory(account=account, role=Role.MEMBER)
    team.members.add(ann)
    return {"message": ingest_into(mailbox, RAW), "ann": ann, "bo": bo, "admin": admin}


def raw_api(user, message):
    return api_client_for(user).get(f"/api/v1/messages/{message.pk}/raw/")


def test_a_team_member_who_sees_the_inbox_gets_the_exact_bytes_as_message_rfc822(world):
    response = raw_api(world["ann"], world["message"])

    assert response.status_code == 200
    assert response["Content-Type"] == "message/rfc822"
    assert response.content == RAW
    assert response["X-Content-Type-Options"] == "nosniff"
    assert raw_api(world["admin"], world["message"]).content == RAW


def test_a_member_who_cannot_see_the_inbox_and_another_account_get_404(world):
    other = UserFactory(role=Role.ADMIN)  # an admin, of another account

    for user in (world["bo"], other):
        response = raw_api(user, world["message"])
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"


def test_an_unknown_message_is_404_and_a_request_without_a_token_is_refused(world, client):
    import uuid

    assert (
        api_client_for(world["ann"]).get(f"/api/v1/messages/{uuid.uuid4()}/raw/").status_code == 404
    )
    assert client.get(f"/api/v1/messages/{world['message'].pk}/raw/").status_code in (401, 403)


def test_a_crm_email_s_sender_reads_it_others_only_once_it_is_logged(account):
    ann = UserFactory(account=account)
    eve = UserFactory(account=account)
    # As the CRM stores an email it sends: the message with its bytes, and the Email.
    message = message_from_parsed(
        account_id=account.pk, parsed=parse_message(RAW), raw=RAW, direction=Direction.OUTBOUND
    )
    message.save()
    contact = Contact.objects.create(
        account=account,
        email="carol@customer.example.com",
        canonical_email="carol@customer.example.com",
    )
    email = Email.objects.create(
        account=account,
        contact=contact,
        message=message,
        direction=Direction.OUTBOUND,
        sent_by=ann,
        logged=False,
        at=timezone.now(),
    )

    assert raw_api(ann, message).content == RAW
    assert raw_api(eve, message).status_code == 404

    Email.objects.filter(pk=email.pk).update(logged=True)
    assert raw_api(eve, message).status_code == 200


def test_the_web_route_shows_plain_text_or_an_eml_download_under_the_same_rule(world, client):
    message = world["message"]
    url = f"/messages/{message.pk}/raw/"

    assert client.get(url).status_code == 302  # to the login page
    client.force_login(world["bo"])
    assert client.get(url).status_code == 404
    client.force_login(world["ann"])
    shown = client.get(url)
    assert shown.status_code == 200 and shown.content == RAW
    assert shown["Content-Type"].startswith("text/plain")
    assert shown["X-Content-Type-Options"] == "nosniff"
    downloaded = client.get(url + "?download=1")
    assert downloaded.content == RAW
    assert downloaded["Content-Disposition"].startswith("attachment;")


def test_the_conversation_view_links_to_show_original(world, client):
    from conversations.models import Conversation

    conversation = Conversation.objects.get(messages=world["message"])
    client.force_login(world["ann"])
    page = client.get(f"/inbox/c/{conversation.pk}/").content.decode()

    assert f'href="/messages/{world["message"].pk}/raw/"' in page
    assert "Show original" in page


def test_the_schema_describes_the_raw_endpoint(admin):
    schema = api_client_for(admin).get(
        "/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json"
    )
    operation = schema.json()["paths"]["/api/v1/messages/{id}/raw/"]["get"]

    assert "message/rfc822" in operation["responses"]["200"]["content"]
    assert "404" in operation["responses"]
