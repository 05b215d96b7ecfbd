"""New email from a conversations inbox (conversations/outbound.py): the API
(POST /api/v1/conversations/), the page (/inbox/new/), who may, and what is refused.
The mail servers' side is tests/conversations/test_new_email_e2e.py."""

from __future__ import annotations

import email
from email import policy

import pytest
from django.test import Client

from accounts.models import Team
from conversations.models import Conversation, ConversationEvent
from crm.contacts import contact_create
from crm.models import TimelineEvent
from inboxes.models import Inbox, Mailbox, OutboxItem

pytestmark = pytest.mark.django_db

SALES = "sales@acme.example.com"
URL = "/api/v1/conversations/"


@pytest.fixture
def sales(account):
    mailbox = Mailbox.objects.create(
        account=account,
        kind="team",
        address=SALES,
        canonical_address=SALES,
        imap_host="imap.acme.example.com",
    )
    return Inbox.objects.create(
        account=account,
        name="Sales",
        mailbox=mailbox,
        from_name="Acme Sales",
        signature="Acme Sales\nhttps://acme.example.com",
    )


@pytest.fixture
def unconnected(account):
    return Inbox.objects.create(account=account, name="Partners")


@pytest.fixture
def restricted(account, other_member):
    team = Team.objects.create(account=account, name="Key accounts")
    team.members.add(other_member)
    mailbox = Mailbox.objects.create(
        account=account,
        kind="team",
        address="vip@acme.example.com",
        canonical_address="vip@acme.example.com",
    )
    inbox = Inbox.objects.create(account=account, name="VIP", mailbox=mailbox, restricted=True)
    inbox.visible_to_teams.add(team)
    return inbox


def body(inbox, **changes) -> dict:
    return {
        "inbox": str(inbox.pk),
        "to": ["Prospect@Lead.example.com"],
        "subject": "Your trial",
        "text": "Hello, how is the trial going?",
        **changes,
    }


def sent_mime(item: OutboxItem) -> email.message.EmailMessage:
    item.message.raw.open("rb")
    try:
        return email.message_from_bytes(item.message.raw.read(), policy=policy.default)
    finally:
        item.message.raw.close()


def test_a_new_email_starts_a_conversation_assigned_to_the_sender(member_api, member, sales):
    response = member_api.post(
        URL, body(sales, cc=["boss@lead.example.com", "prospect@lead.example.com"]), format="json"
    )
    assert response.status_code == 201, response.json()
    data = response.json()
    conversation = Conversation.objects.get(pk=data["id"])
    assert data["inbox"] == str(sales.pk)
    assert data["assignee"] == str(member.pk)
    assert data["subject"] == "Your trial"
    assert data["status"] == "open"
    assert data["contact"] is None
    assert data["message_count"] == 1
    [message] = data["messages"]
    assert message["direction"] == "outbound"
    assert message["delivery"]["state"] == "queued"
    assert conversation.customer_address == "prospect@lead.example.com"
    item = OutboxItem.objects.get(message_id=message["id"])
    assert item.mailbox == sales.mailbox
    # The cc that repeats a To address is left out.
    assert item.recipients == ["Prospect@Lead.example.com", "boss@lead.example.com"]
    mime = sent_mime(item)
    assert mime["From"] == f"Acme Sales <{SALES}>"
    assert mime["Subject"] == "Your trial"
    assert mime["In-Reply-To"] is None
    text = mime.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert text == "Hello, how is the trial going?\n\n-- \nAcme Sales\nhttps://acme.example.com\n"
    event = ConversationEvent.objects.get(conversation=conversation)
    assert (event.kind, event.assignee) == ("assigned", member)


def test_the_new_conversation_links_to_the_contact_and_goes_on_its_timeline(
    account, member_api, sales
):
    contact = contact_create(account=account, email="prospect@lead.example.com", name="Pat Lead")
    data = member_api.post(URL, body(sales), format="json").json()
    assert data["contact"] == str(contact.pk)
    [event] = TimelineEvent.objects.filter(contact=contact)
    assert event.type == "email" and event.email is None
    assert event.detail["direction"] == "outbound"
    assert event.detail["conversation"] == data["id"]
    assert event.detail["from"] == SALES
    item = OutboxItem.objects.get(message_id=data["messages"][0]["id"])
    assert sent_mime(item)["To"] == "Pat Lead <Prospect@Lead.example.com>"


@pytest.mark.parametrize(
    ("changes", "field", "detail"),
    [
        ({"to": ["not an address"]}, "to", "not a valid email address"),
        ({"to": ["ok@lead.example.com"], "cc": ["@nope"]}, "cc", "not a valid email address"),
        ({"to": [SALES.upper()]}, "to", "this inbox's own address"),
        ({"to": [""]}, "to", None),
        ({"to": []}, "to", None),
        ({"subject": ""}, "subject", None),
        ({"text": "   "}, "text", None),
    ],
)
def test_what_is_refused(member_api, sales, changes, field, detail):
    response = member_api.post(URL, body(sales, **changes), format="json")
    assert response.status_code == 400, response.json()
    data = response.json()
    assert data["code"] == "invalid"
    assert field in data["errors"]
    if detail:
        assert detail in data["detail"]
    assert not Conversation.objects.exists() and not OutboxItem.objects.exists()


def test_an_inbox_without_a_connected_team_email_says_what_to_do(member_api, sales, unconnected):
    response = member_api.post(URL, body(unconnected), format="json")
    assert response.status_code == 400
    assert response.json()["errors"] == {"inbox": ["No connected team email."]}
    assert "An admin connects one in Settings" in response.json()["detail"]
    sales.mailbox.status = "disconnected"
    sales.mailbox.save()
    assert member_api.post(URL, body(sales), format="json").status_code == 400
    assert not Conversation.objects.exists()


def test_only_who_may_reply_in_the_inbox_may_start_one(
    member_api, other_member, outsider_api, restricted, sales
):
    from tests.support.api import api_client_for

    # Bo is not in the team that sees VIP: as if it did not exist.
    response = member_api.post(URL, body(restricted), format="json")
    assert (response.status_code, response.json()["code"]) == (404, "not_found")
    # Another account's inbox: the same.
    response = outsider_api.post(URL, body(sales), format="json")
    assert (response.status_code, response.json()["code"]) == (404, "not_found")
    assert not Conversation.objects.exists()
    # Cy is in the team.
    response = api_client_for(other_member).post(URL, body(restricted), format="json")
    assert response.status_code == 201
    assert Client().post(URL, body(sales), content_type="application/json").status_code == 401


def test_the_page_sends_and_opens_the_conversation(client, member, sales, unconnected):
    client.force_login(member)
    page = client.get("/inbox/new/", {"inbox": sales.pk}).content.decode()
    assert "Acme Sales &lt;sales@acme.example.com&gt;" in page
    assert "Partners" not in page  # nothing to send from there
    response = client.post(
        "/inbox/new/",
        {
            "inbox": str(sales.pk),
            "to": "prospect@lead.example.com, second@lead.example.com",
            "cc": "",
            "subject": "Hello",
            "text": "Hi!",
        },
    )
    conversation = Conversation.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/inbox/c/{conversation.pk}/?view=mine"
    assert OutboxItem.objects.get().recipients == [
        "prospect@lead.example.com",
        "second@lead.example.com",
    ]
    shown = client.get(response["Location"]).content.decode()
    assert "Email queued" in shown and "Hello" in shown


def test_the_page_shows_errors_on_their_fields_and_keeps_what_was_typed(client, member, sales):
    client.force_login(member)
    response = client.post(
        "/inbox/new/",
        {"inbox": str(sales.pk), "to": "prospect@", "subject": "Hello", "text": "Kept text"},
    )
    page = response.content.decode()
    assert response.status_code == 200
    assert "is not a valid email address" in page
    assert "Kept text" in page and 'value="prospect@"' in page
    assert not Conversation.objects.exists()


def test_the_page_refuses_an_inbox_the_user_does_not_see(client, member, sales, restricted):
    client.force_login(member)
    response = client.post(
        "/inbox/new/",
        {"inbox": str(restricted.pk), "to": "a@lead.example.com", "subject": "x", "text": "y"},
    )
    assert response.status_code == 200
    assert "No such inbox." in response.content.decode()
    assert not Conversation.objects.exists()


def test_without_a_team_email_the_page_says_what_to_do(client, member, unconnected):
    client.force_login(member)
    page = client.get("/inbox/new/").content.decode()
    assert "Ask an admin to connect one in Settings › Inboxes" in page
    assert "Send email" not in page


def test_the_page_needs_csrf_and_a_login(member, sales):
    anonymous = Client()
    assert anonymous.get("/inbox/new/").status_code == 302
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(member)
    response = strict.post(
        "/inbox/new/", {"inbox": str(sales.pk), "to": "a@b.example", "subject": "x", "text": "y"}
    )
    assert response.status_code == 403
    assert not Conversation.objects.exists()


def test_make_contact_button_without_javascript(client, account, member, sales):
    from tests.support.conversations_factory import make_conversation

    client.force_login(member)
    conversation = make_conversation(sales, sender="lead@prospect.example.com", sender_name="Lee")
    page = client.get(f"/inbox/c/{conversation.pk}/").content.decode()
    assert "Make contact" in page and "Lee is not a contact yet." in page
    response = client.post(
        f"/inbox/c/{conversation.pk}/contact/", {"next": f"/inbox/c/{conversation.pk}/"}
    )
    assert response.status_code == 302
    conversation.refresh_from_db()
    contact = conversation.contact
    assert (contact.email, contact.name) == ("lead@prospect.example.com", "Lee")
    page = client.get(response["Location"]).content.decode()
    assert f'href="/contacts/{contact.pk}/"' in page
    assert "Lee is a contact now." in page
    assert "Make contact" not in page


def test_make_contact_needs_csrf_and_a_visible_conversation(outsider, member, sales):
    from tests.support.conversations_factory import make_conversation

    conversation = make_conversation(sales)
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(member)
    assert strict.post(f"/inbox/c/{conversation.pk}/contact/").status_code == 403
    other = Client()
    other.force_login(outsider)
    assert other.post(f"/inbox/c/{conversation.pk}/contact/").status_code == 404
    conversation.refresh_from_db()
    assert conversation.contact_id is None
