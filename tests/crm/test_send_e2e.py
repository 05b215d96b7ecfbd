"""A one-to-one email end to end: queued from the CRM, sent by a real Celery worker
through aiosmtpd (IMAP/SMTP), and through the Gmail and Graph fakes by the send run;
what arrives carries the font, a text part, the pixel and rewritten links, and the
email's delivery goes queued -> sent."""

from __future__ import annotations

import email as email_lib
import re
from email import policy

import pytest
from django.db import transaction

from crm.models import Email, TimelineEvent, TrackedLink
from crm.sending import email_queue
from crm.tracking import token_read
from inboxes.delivery import delivery_of
from inboxes.models import Provider
from inboxes.oauth_connect import oauth_mailbox_connect
from inboxes.outbox import outbox_send_run
from tests.crm.send_support import dana
from tests.support.mail import connect_imap_mailbox

pytest.register_assert_rewrite("tests.support.workers")
from tests.support.workers import wait_until  # noqa: E402

pytest_plugins = [
    "tests.support.workers",
    "tests.support.fakes.google",
    "tests.support.fakes.microsoft",
]

ANN = "ann.personal@acme.example.com"
HTML = (
    '<p>Hi Dana,</p><p>Here is <a href="https://acme.example.com/proposal?id=42&amp;v=2">'
    'the proposal</a> and <a href="https://acme.example.com/pricing">our pricing</a>.</p>'
)


def queue_tracked(sender, contact, mailbox, **kwargs) -> Email:
    with transaction.atomic():
        email = email_queue(
            sender=sender,
            contact=contact,
            mailbox=mailbox,
            subject="Our proposal",
            html=HTML,
            track_opens=True,
            track_clicks=True,
            **kwargs,
        )
        # Not committed yet: nothing can have picked it up.
        assert delivery_of(email.message)["state"] == "queued"
    return email


def delivery_state(email: Email) -> str:
    fresh = Email.objects.select_related("message__outbox").get(pk=email.pk)
    return delivery_of(fresh.message)["state"]


def assert_arrived_as_composed(raw: bytes, email: Email, sender) -> None:
    mime = email_lib.message_from_bytes(raw, policy=policy.default)
    assert mime["To"] == "Dana Prospect <dana@prospect.example.com>"
    assert mime["Subject"] == "Our proposal"
    assert mime.get_content_type() == "multipart/alternative"
    plain = mime.get_body(("plain",)).get_content()
    html = mime.get_body(("html",)).get_content()
    # The sender's default font (Arial 14 px unless changed) wraps the HTML.
    assert html.startswith(
        '<div style="font-family: Arial, Helvetica, sans-serif; font-size: 14px">'
    )
    # A text part made from the HTML, links readable.
    assert "Hi Dana," in plain and "the proposal (https://acme.example.com/proposal" in plain
    # Every link goes through a click token naming this email and that link.
    hrefs = re.findall(r'href="([^"]+)"', html)
    assert len(hrefs) == 2 and all(h.startswith("http://127.0.0.1:8000/t/c/") for h in hrefs)
    tokens = [token_read(h.rsplit("/", 1)[1]) for h in hrefs]
    assert [(t.email_id, t.position) for t in tokens] == [(email.pk, 0), (email.pk, 1)]
    assert list(
        TrackedLink.objects.filter(email=email).order_by("position").values_list("url", flat=True)
    ) == [  # fmt: skip
        "https://acme.example.com/proposal?id=42&v=2",
        "https://acme.example.com/pricing",
    ]
    # The pixel, 1x1, naming this email.
    [pixel] = re.findall(r'<img src="http://127.0.0.1:8000/t/o/([^"]+)" width="1" height="1"', html)
    assert token_read(pixel).email_id == email.pk


@pytest.mark.django_db(transaction=True)
def test_an_email_from_an_imap_mailbox_leaves_through_the_worker_with_font_text_and_tracking(
    engine, member, dovecot, smtp_server, mail_user
):
    worker = engine.worker()
    mailbox = connect_imap_mailbox(
        actor=member,
        dovecot=dovecot,
        smtp_server=smtp_server,
        user=mail_user,
        address=ANN,
        kind="personal",
    )
    smtp_server.clear()
    contact = dana(member.account)

    email = queue_tracked(member, contact, mailbox)

    [received] = smtp_server.wait_for_messages(1, timeout=20)
    assert received.rcpt_tos == ("dana@prospect.example.com",)
    assert_arrived_as_composed(received.data, email, member)
    wait_until(lambda: delivery_state(email) == "sent", 10, "the sent mark")
    assert TimelineEvent.objects.filter(contact=contact, type="email", email=email).exists()
    assert worker.alive()


@pytest.mark.django_db(transaction=True)
def test_with_log_off_it_is_sent_but_not_on_the_timeline(
    engine, member, dovecot, smtp_server, mail_user
):
    engine.worker()
    mailbox = connect_imap_mailbox(
        actor=member,
        dovecot=dovecot,
        smtp_server=smtp_server,
        user=mail_user,
        address=ANN,
        kind="personal",
    )
    smtp_server.clear()
    contact = dana(member.account)

    email = queue_tracked(member, contact, mailbox, log=False)

    smtp_server.wait_for_messages(1, timeout=20)
    wait_until(lambda: delivery_state(email) == "sent", 10, "the sent mark")
    assert not TimelineEvent.objects.filter(contact=contact).exists()


@pytest.mark.django_db
def test_an_email_from_a_gmail_mailbox_goes_through_the_gmail_api(member, fake_google, monkeypatch):
    from inboxes.providers.gmail import api as gmail_api
    from tests.inboxes.test_gmail import grant_for

    monkeypatch.setattr(gmail_api, "_sleep", lambda seconds: None)
    address = "ann.gmail@acme.example.com"
    mailbox = oauth_mailbox_connect(
        actor=member,
        provider=Provider.GMAIL,
        grant=grant_for(fake_google, address),
        kind="personal",
    )
    email = queue_tracked(member, dana(member.account), mailbox)

    assert outbox_send_run(mailbox.pk).sent == 1

    [sent] = fake_google.sent
    assert_arrived_as_composed(sent.raw, email, member)
    assert delivery_state(email) == "sent"


@pytest.mark.django_db
@pytest.mark.usefixtures("loopback_only")
def test_an_email_from_a_microsoft_mailbox_goes_through_graph(member, fake_microsoft):
    address = "ann.ms@acme.example.com"
    fake_microsoft.add_user(address, "Ann")
    mailbox = oauth_mailbox_connect(
        actor=member,
        provider=Provider.MICROSOFT,
        grant=fake_microsoft.grant(address),
        kind="personal",
    )
    email = queue_tracked(member, dana(member.account), mailbox)

    assert outbox_send_run(mailbox.pk).sent == 1

    [sent] = fake_microsoft.sent
    assert_arrived_as_composed(sent.raw, email, member)
    assert delivery_state(email) == "sent"
