"""Bounces and auto-replies in the conversations inbox: a tied bounce is a system line
in the bounced email's conversation, an untied one its own "Bounces" conversation that
nobody is assigned, and an auto-reply leaves a closed conversation closed unless the
inbox says otherwise. Mail arrives through the sync's ingest, parsed for real."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from conversations import handling
from conversations.models import Conversation, ConversationEvent, RoutingRule
from conversations.presenters import timeline
from conversations.selectors import conversation_detail
from inboxes.delivery import delivery_of
from inboxes.models import Inbox, Mailbox, MailboxFolder, Message, OutboxItem
from inboxes.providers.base import RawMessage
from inboxes.sync.ingest import ingest_batch

MACHINE = Path(__file__).resolve().parent.parent / "fixtures" / "machine"
ORIGINAL = b"<reply.1@support.example.com>"
pytestmark = pytest.mark.django_db
_keys = itertools.count(1)


@pytest.fixture
def support(account):
    mailbox = Mailbox.objects.create(
        account=account,
        kind="team",
        address="support@support.example.com",
        canonical_address="support@support.example.com",
    )
    inbox = Inbox.objects.create(account=account, name="Support", mailbox=mailbox)
    MailboxFolder.objects.create(mailbox=mailbox, role="inbox", name="INBOX")
    return inbox


def deliver(inbox: Inbox, raw: bytes) -> Message:
    folder = MailboxFolder.objects.get(mailbox=inbox.mailbox, role="inbox")
    key = f"1:{next(_keys)}"
    ingest_batch(
        mailbox=inbox.mailbox,
        folder=folder,
        raws=[RawMessage(key=key, raw=raw)],
        cursor={},
        backfill=False,
    )
    stored = Message.objects.filter(account_id=inbox.account_id).order_by("-created_at").first()
    assert stored is not None
    return stored


QUESTION = (
    b"From: Ann Jansen <ann@x.example>\r\nTo: support@support.example.com\r\n"
    b"Subject: My order\r\nDate: Tue, 05 Mar 2024 09:00:00 +0100\r\n"
    b"Message-ID: <question.1@x.example>\r\n\r\nWhere is my order?\r\n"
)


@pytest.fixture
def replied(support, admin):
    """Ann asked, the team answered (sent), and the conversation was closed."""
    deliver(support, QUESTION)
    conversation = Conversation.objects.get(inbox=support)
    reply = handling.conversation_reply(
        actor=admin, conversation=conversation, text="Your order ships tomorrow."
    )
    OutboxItem.objects.filter(message=reply).update(state="sent")
    handling.conversation_set_status(actor=admin, conversation=conversation, status="closed")
    return conversation, Message.objects.get(pk=reply.pk)


def bounce_for(reply: Message, fixture: str, *, original: bytes = ORIGINAL) -> bytes:
    return (MACHINE / f"{fixture}.eml").read_bytes().replace(original, reply.message_id.encode())


@pytest.mark.parametrize(
    "fixture",
    [
        "postfix_dsn",  # message/rfc822 part
        "exim_text",  # quoted headers in plain text
        "qmail_text",
        "exchange_ndr",
        "gmail_dsn",  # text/rfc822-headers part
        "sendmail_dsn",
        "ses_dsn",
    ],
)
def test_a_tied_bounce_is_a_system_line_in_the_replys_conversation_and_marks_it_bounced(
    replied, support, admin, fixture
):
    conversation, reply = replied
    events_before = ConversationEvent.objects.filter(conversation=conversation).count()
    assignee_before = Conversation.objects.get(pk=conversation.pk).assignee_id

    bounce = deliver(support, bounce_for(reply, fixture))

    assert bounce.kind == "bounce" and bounce.bounce_of_id == reply.pk
    assert Conversation.objects.filter(inbox=support).count() == 1  # no new conversation
    conversation.refresh_from_db()
    assert conversation.status == "closed"  # not reopened
    assert conversation.assignee_id == assignee_before  # not re-routed
    assert ConversationEvent.objects.filter(conversation=conversation).count() == events_before
    assert {reply, bounce} <= set(conversation.messages.all())
    delivery = delivery_of(Message.objects.prefetch_related("bounces").get(pk=reply.pk))
    assert delivery["state"] == "bounced"
    assert [b["address"] for b in delivery["bounces"]] == ["ann@x.example"]
    assert delivery["detail"].startswith("Not delivered to ann@x.example: ")
    items, _ = timeline(conversation_detail(conversation), user=admin, remote=False)
    (line,) = [item for item in items if item["kind"] == "bounce"]
    assert line["text"].startswith("Not delivered to ann@x.example: ")


def test_a_tied_bounce_line_says_the_diagnostic_in_plain_words(replied, support, admin):
    conversation, reply = replied
    deliver(support, bounce_for(reply, "postfix_dsn"))

    items, _ = timeline(conversation_detail(conversation), user=admin, remote=False)

    assert [i["text"] for i in items if i["kind"] == "bounce"] == [
        "Not delivered to ann@x.example: mailbox does not exist"
    ]
    (shown,) = [i for i in items if i["kind"] == "message" and i["message"].pk == reply.pk]
    assert shown["delivery"]["state"] == "bounced"


def test_a_dsn_with_only_the_originals_headers_is_tied_by_them(replied, support):
    _, reply = replied
    raw = bounce_for(reply, "headers_only_dsn", original=b"<reply.2@support.example.com>")

    bounce = deliver(support, raw)

    assert bounce.bounce_of_id == reply.pk
    # A delay report is tied but does not make the email bounced.
    assert delivery_of(Message.objects.get(pk=reply.pk))["state"] == "sent"


def test_a_bounce_with_only_in_reply_to_is_tied_by_it(replied, support):
    _, reply = replied
    raw = (
        b"From: MAILER-DAEMON@mx.support.example.com\r\nTo: support@support.example.com\r\n"
        b"Subject: Undelivered Mail Returned to Sender\r\nX-Failed-Recipients: ann@x.example\r\n"
        b"In-Reply-To: " + reply.message_id.encode() + b"\r\nMessage-ID: <b.9@mx.example>\r\n"
        b"\r\n550 5.1.1 User unknown\r\n"
    )

    bounce = deliver(support, raw)

    assert bounce.bounce_of_id == reply.pk
    assert Conversation.objects.filter(inbox=support).count() == 1


def test_an_untied_bounce_opens_a_bounce_conversation_that_nobody_is_assigned(
    support, admin, member
):
    rule = RoutingRule.objects.create(inbox=support, mode="round_robin")
    rule.users.set([admin, member])

    bounce = deliver(support, (MACHINE / "postfix_dsn.eml").read_bytes())

    assert bounce.kind == "bounce" and bounce.bounce_of_id is None
    conversation = Conversation.objects.get(inbox=support)
    assert conversation.is_bounce
    assert conversation.assignee_id is None
    assert not ConversationEvent.objects.filter(conversation=conversation).exists()


def test_bounce_conversations_have_their_filter_in_the_api_and_the_inbox(
    support, admin, admin_api, client
):
    deliver(support, QUESTION)
    deliver(support, (MACHINE / "postfix_dsn.eml").read_bytes())
    bounced = Conversation.objects.get(is_bounce=True)
    person = Conversation.objects.get(is_bounce=False)

    listed = admin_api.get("/api/v1/conversations/", {"kind": "bounce"}).json()["results"]
    others = admin_api.get("/api/v1/conversations/", {"kind": "email"}).json()["results"]

    assert [c["id"] for c in listed] == [str(bounced.pk)] and listed[0]["is_bounce"] is True
    assert [c["id"] for c in others] == [str(person.pk)]
    client.force_login(admin)
    page = client.get("/inbox/", {"view": "bounces"}).content.decode()
    assert "Bounces" in page
    assert str(bounced.pk) in page and str(person.pk) not in page
    assert ">Bounce</span>" in page


def test_an_auto_reply_is_shown_but_leaves_a_closed_conversation_closed(replied, support, admin):
    conversation, reply = replied
    raw = (MACHINE / "exchange_oof.eml").read_bytes().replace(ORIGINAL, reply.message_id.encode())

    auto = deliver(support, raw)

    conversation.refresh_from_db()
    assert auto.kind == "auto_reply"
    assert auto in conversation.messages.all()
    assert conversation.status == "closed"
    items, _ = timeline(conversation_detail(conversation), user=admin, remote=False)
    marked = {i["message"].pk: i["auto_reply"] for i in items if i["kind"] == "message"}
    assert marked == {
        auto.pk: True,
        reply.pk: False,
        conversation.messages.earliest("sent_at").pk: False,
    }


def test_an_auto_reply_reopens_when_the_inbox_says_so(replied, support, admin_api):
    conversation, reply = replied
    changed = admin_api.patch(
        f"/api/v1/inboxes/{support.pk}/", {"reopen_on_auto_reply": True}, format="json"
    )
    assert changed.status_code == 200 and changed.json()["reopen_on_auto_reply"] is True
    raw = (MACHINE / "exchange_oof.eml").read_bytes().replace(ORIGINAL, reply.message_id.encode())

    deliver(support, raw)

    conversation.refresh_from_db()
    assert conversation.status == "open"
    event = ConversationEvent.objects.filter(conversation=conversation).last()
    assert event is not None and event.kind == "reopened" and event.detail["auto_reply"] is True


def test_the_customers_own_reply_still_reopens(replied, support):
    conversation, reply = replied
    raw = (
        b"From: Ann Jansen <ann@x.example>\r\nTo: support@support.example.com\r\n"
        b"Subject: Re: My order\r\nIn-Reply-To: " + reply.message_id.encode() + b"\r\n"
        b"Message-ID: <question.2@x.example>\r\n\r\nThanks!\r\n"
    )
    deliver(support, raw)
    conversation.refresh_from_db()
    assert conversation.status == "open"


def test_the_message_api_gives_kind_bounce_and_delivery(replied, support, admin_api):
    conversation, reply = replied
    bounce = deliver(support, bounce_for(reply, "gmail_dsn"))

    data = admin_api.get(f"/api/v1/conversations/{conversation.pk}/").json()

    by_id = {m["id"]: m for m in data["messages"]}
    assert by_id[str(bounce.pk)]["kind"] == "bounce"
    assert by_id[str(bounce.pk)]["bounce"] == {
        "original": str(reply.pk),
        "recipients": [
            {
                "address": "ann@x.example",
                "action": "failed",
                "status": "5.1.1",
                "diagnostic": "mailbox does not exist",
            }
        ],
    }
    sent = by_id[str(reply.pk)]
    assert sent["kind"] == "email" and sent["bounce"] is None
    assert sent["delivery"]["state"] == "bounced"
    assert sent["delivery"]["bounces"][0]["status"] == "5.1.1"


def test_the_inbox_settings_page_switches_reopen_on_auto_reply(client, admin, support):
    client.force_login(admin)
    url = f"/settings/inboxes/{support.pk}/auto-replies/"

    assert client.post(url, {"reopen_on_auto_reply": "1"}).status_code == 302
    support.refresh_from_db()
    assert support.reopen_on_auto_reply is True
    page = client.get(f"/settings/inboxes/{support.pk}/routing/").content.decode()
    assert 'name="reopen_on_auto_reply" value="1" checked' in page
    client.post(url, {})
    support.refresh_from_db()
    assert support.reopen_on_auto_reply is False


def test_the_openapi_schema_has_the_machine_mail_fields(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    components = schema["components"]["schemas"]

    message = components["MessageOutput"]["properties"]
    assert {"kind", "bounce", "delivery"} <= set(message)
    assert set(components["BounceOutput"]["properties"]) == {"original", "recipients"}
    assert set(components["DeliveryOutput"]["properties"]) >= {"state", "detail", "bounces"}
    assert "reopen_on_auto_reply" in components["InboxOutput"]["properties"]
    parameters = schema["paths"]["/api/v1/conversations/"]["get"]["parameters"]
    assert "kind" in {p["name"] for p in parameters}
