"""A database filled before Inbox, Message and Attachment moved to the engine migrates
across with every row and every link intact (inboxes 0005, conversations 0008)."""

from __future__ import annotations

import pytest
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from conversations.models import Conversation, ConversationMessage, RoutingRule
from inboxes.models import Attachment, Inbox, MailboxMessage, Message, OutboxItem

BEFORE_THE_MOVE = [
    ("conversations", "0007_message_lz4_compression"),
    ("inboxes", "0004_mailbox_sync_requested"),
]


def _fill(apps) -> dict:
    """Rows of every moved model and of every model that points at them, as of before."""
    Account = apps.get_model("accounts", "Account")
    User = apps.get_model("accounts", "User")
    Team = apps.get_model("accounts", "Team")
    Mailbox = apps.get_model("inboxes", "Mailbox")
    OldInbox = apps.get_model("conversations", "Inbox")
    OldMessage = apps.get_model("conversations", "Message")
    OldAttachment = apps.get_model("conversations", "Attachment")
    OldConversation = apps.get_model("conversations", "Conversation")
    OldConversationMessage = apps.get_model("conversations", "ConversationMessage")
    OldRoutingRule = apps.get_model("conversations", "RoutingRule")
    Folder = apps.get_model("inboxes", "MailboxFolder")
    OldMailboxMessage = apps.get_model("inboxes", "MailboxMessage")
    OldOutboxItem = apps.get_model("inboxes", "OutboxItem")

    # As an old database has them: the moved models' content types under conversations.
    ContentTypeThen = apps.get_model("contenttypes", "ContentType")
    ContentTypeThen.objects.filter(
        app_label="inboxes", model__in=["inbox", "message", "attachment"]
    ).update(app_label="conversations")

    account = Account.objects.create(name="Acme", plan="professional")
    ann = User.objects.create(account=account, email="ann@acme.example.com", role="admin")
    team = Team.objects.create(account=account, name="Tier 1")
    team.members.add(ann)
    mailbox = Mailbox.objects.create(
        account=account,
        address="support@acme.example.com",
        canonical_address="support@acme.example.com",
        kind="team",
    )
    inbox = OldInbox.objects.create(
        account=account, name="Support", mailbox=mailbox, from_name="Acme Support", restricted=True
    )
    inbox.visible_to_teams.add(team)
    OldRoutingRule.objects.create(inbox=inbox, mode="round_robin")
    inbound = OldMessage.objects.create(
        account=account,
        dedupe_key="k1",
        message_id="<one@customer.example>",
        subject="Where is my order?",
        from_address="cy@customer.example",
        text="Hello",
        headers={"x-mailer": "Mutt"},
    )
    reply = OldMessage.objects.create(
        account=account, dedupe_key="k2", direction="outbound", subject="Re: Where is my order?"
    )
    OldAttachment.objects.create(
        message=inbound, filename="invoice.pdf", content_type="application/pdf", size=42
    )
    conversation = OldConversation.objects.create(
        account=account, inbox=inbox, subject="Where is my order?", message_count=2
    )
    OldConversationMessage.objects.create(inbox=inbox, conversation=conversation, message=inbound)
    OldConversationMessage.objects.create(inbox=inbox, conversation=conversation, message=reply)
    folder = Folder.objects.create(mailbox=mailbox, role="inbox", name="INBOX")
    OldMailboxMessage.objects.create(folder=folder, provider_key="7:1", message=inbound)
    OldOutboxItem.objects.create(
        account=account,
        mailbox=mailbox,
        message=reply,
        envelope_from="support@acme.example.com",
        recipients=["cy@customer.example"],
    )
    return {
        "inbox": inbox.pk,
        "team": team.pk,
        "inbound": inbound.pk,
        "reply": reply.pk,
        "conversation": conversation.pk,
    }


@pytest.mark.django_db(transaction=True)
def test_a_database_filled_before_the_move_migrates_across_with_its_data():
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE_THE_MOVE)
    ids = _fill(executor.loader.project_state(BEFORE_THE_MOVE).apps)
    try:
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())

        inbox = Inbox.objects.get(pk=ids["inbox"])
        assert (inbox.name, inbox.from_name, inbox.restricted) == ("Support", "Acme Support", True)
        assert inbox.mailbox.address == "support@acme.example.com"
        assert [t.pk for t in inbox.visible_to_teams.all()] == [ids["team"]]
        assert RoutingRule.objects.get(inbox=inbox).mode == "round_robin"

        inbound = Message.objects.get(pk=ids["inbound"])
        assert (inbound.subject, inbound.text, inbound.headers) == (
            "Where is my order?",
            "Hello",
            {"x-mailer": "Mutt"},
        )
        assert [(a.filename, a.size) for a in Attachment.objects.filter(message=inbound)] == [
            ("invoice.pdf", 42)
        ]
        conversation = Conversation.objects.get(pk=ids["conversation"])
        assert conversation.inbox == inbox
        assert set(conversation.messages.values_list("pk", flat=True)) == {
            ids["inbound"],
            ids["reply"],
        }
        assert ConversationMessage.objects.filter(inbox=inbox).count() == 2
        assert MailboxMessage.objects.get(provider_key="7:1").message == inbound
        assert OutboxItem.objects.get().message_id == ids["reply"]
        ContentType.objects.clear_cache()
        moved = ContentType.objects.filter(model__in=["inbox", "message", "attachment"])
        assert sorted(moved.values_list("app_label", "model")) == [
            ("inboxes", "attachment"),
            ("inboxes", "inbox"),
            ("inboxes", "message"),
        ]
    finally:
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())
