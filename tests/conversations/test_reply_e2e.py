"""A reply from the inbox end to end: posted through the web composer with an
attachment, Cc and Bcc, sent by a real Celery worker (on a private Redis) to aiosmtpd;
what the server received is the MIME the customer gets."""

from __future__ import annotations

import email
from email import policy

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from inboxes.models import OutboxItem
from tests.support.conversations_factory import make_conversation
from tests.support.mail import connect_imap_mailbox, team_inbox

pytest.register_assert_rewrite("tests.support.workers")
from tests.support.workers import wait_until  # noqa: E402

pytest_plugins = ["tests.support.workers"]
pytestmark = pytest.mark.django_db(transaction=True)

SUPPORT = "support@acme.example.com"
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 40 + b"\n%%EOF\n"


@pytest.fixture
def support_inbox(admin, dovecot, smtp_server, mail_user):
    inbox = team_inbox(admin.account, name="Support", from_name="Acme Support")
    connect_imap_mailbox(
        actor=admin,
        dovecot=dovecot,
        smtp_server=smtp_server,
        user=mail_user,
        address=SUPPORT,
        inbox=inbox,
    )
    return inbox


def test_a_reply_with_an_attachment_reaches_the_smtp_server_with_the_file(
    private_engine, member, support_inbox, smtp_server
):
    worker = private_engine.worker()
    assert worker
    conversation = make_conversation(support_inbox, subject="Invoice please")
    smtp_server.clear()
    client = Client()
    client.force_login(member)

    response = client.post(
        f"/inbox/c/{conversation.pk}/reply/",
        {
            "text": "",
            "html": "<div>Here is <b>your invoice</b>.</div>",
            "cc": "dave@partner.example.com",
            "bcc": "archive@records.example.com",
            "attachments": [SimpleUploadedFile("invoice 2026.pdf", PDF, "application/pdf")],
        },
    )
    assert response.status_code == 302

    [received] = smtp_server.wait_for_messages(1, timeout=15)
    assert set(received.rcpt_tos) == {
        "carol@customer.example.com",
        "dave@partner.example.com",
        "archive@records.example.com",
    }
    sent = email.message_from_bytes(received.data, policy=policy.default)
    assert sent["Bcc"] is None and b"records.example.com" not in received.data
    assert sent["Cc"] == "dave@partner.example.com"
    assert sent.get_content_type() == "multipart/mixed"
    [attached] = list(sent.iter_attachments())
    assert attached.get_filename() == "invoice 2026.pdf"
    assert attached.get_content_type() == "application/pdf"
    assert attached.get_content() == PDF
    body = sent.get_body(preferencelist=("html",))
    assert "<b>your invoice</b>" in body.get_content()
    assert "Here is your invoice." in sent.get_body(preferencelist=("plain",)).get_content()
    item = wait_until(lambda: OutboxItem.objects.filter(state="sent").first(), 15, "the sent mark")
    assert [a.filename for a in item.message.attachments.all()] == ["invoice 2026.pdf"]
