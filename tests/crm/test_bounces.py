"""Delivery reports in a personal mailbox on the CRM's emails: a hard bounce marks the
contact and stops their sequences, a soft one is only noted; reports on anything else
are not stored.

The engine's parser does not classify DSNs yet (another task): each report here is the
real DSN bytes through the engine's ingest, with ``ParsedMessage.kind``/``bounce`` as
the parser fills them (``ingest_classified``); once the parser classifies them, its
own fields are used."""

from __future__ import annotations

import pytest
from django.db import transaction

from crm.consumer import personal_mail_consumer
from crm.models import Email, TimelineEvent
from crm.sending import email_queue
from inboxes.delivery import delivery_of
from inboxes.models import MailboxMessage, Message
from inboxes.sync import mailbox_sync
from tests.support.crm_mail import (
    bounce_fields,
    connect_rep,
    contact,
    dsn,
    enrol,
    ingest_classified,
)
from tests.support.mail import send_due

pytestmark = pytest.mark.django_db

CAROL = "carol@customer.example.com"


@pytest.fixture
def rep(member, dovecot, smtp_server, mail_user):
    rep = connect_rep(member, dovecot, smtp_server, mail_user)
    mailbox_sync(rep.mailbox.pk)
    return rep


@pytest.fixture
def carol(account, member):
    return contact(account, CAROL, owner=member)


def sent_to(rep, who) -> Email:
    with transaction.atomic():
        sent = email_queue(
            sender=rep.user, contact=who, mailbox=rep.mailbox, subject="Hello", text="Hi"
        )
    assert send_due(sent.message.outbox) == "sent"
    return sent


def report(rep, sent: Email, status: str, recipient: str = CAROL):
    original = sent.message.message_id
    raw = dsn(original_message_id=original, recipient=recipient, status=status)
    fields = bounce_fields(original_message_id=original, recipient=recipient, status=status)
    ingest_classified(rep.mailbox, raw, kind="bounce", bounce=fields)
    return Message.objects.get(kind="bounce")


def test_a_hard_bounce_marks_the_contact_and_stops_their_sequence(rep, carol):
    enrolment = enrol(carol, rep.mailbox)
    sent = sent_to(rep, carol)

    bounce = report(rep, sent, "5.1.1")

    assert bounce.bounce_of_id == sent.message_id
    carol.refresh_from_db()
    assert carol.bounced_at == bounce.sent_at
    assert "5.1.1" in carol.bounce_detail
    enrolment.refresh_from_db()
    assert (enrolment.state, enrolment.stop_reason) == ("stopped", "bounced")
    [event] = TimelineEvent.objects.filter(contact=carol, email=sent, detail__event="bounced")
    assert event.detail["hard"] is True and event.detail["status"] == "5.1.1"
    assert delivery_of(Message.objects.get(pk=sent.message_id))["state"] == "bounced"
    # the report is not logged as mail from the contact
    assert not Email.objects.filter(message=bounce).exists()


def test_a_soft_bounce_is_noted_and_stops_nothing(rep, carol):
    enrolment = enrol(carol, rep.mailbox)
    sent = sent_to(rep, carol)

    bounce = report(rep, sent, "4.2.2")

    assert bounce.bounce_of_id == sent.message_id
    carol.refresh_from_db()
    assert carol.bounced_at is None and carol.bounce_detail == ""
    enrolment.refresh_from_db()
    assert enrolment.state == "active"
    [event] = TimelineEvent.objects.filter(contact=carol, email=sent, detail__event="bounced")
    assert event.detail["hard"] is False and event.detail["status"] == "4.2.2"


def test_a_report_on_mail_the_crm_did_not_send_is_not_stored(rep, carol):
    raw = dsn(
        original_message_id="<elsewhere@friends.example.org>", recipient=CAROL, status="5.1.1"
    )
    fields = bounce_fields(
        original_message_id="<elsewhere@friends.example.org>", recipient=CAROL, status="5.1.1"
    )
    ingest_classified(rep.mailbox, raw, kind="bounce", bounce=fields, key="dsn-1")

    assert not Message.objects.filter(kind="bounce").exists()
    assert MailboxMessage.objects.get(provider_key="dsn-1").message_id is None
    carol.refresh_from_db()
    assert carol.bounced_at is None


def test_a_report_delivered_twice_is_noted_once(rep, carol):
    sent = sent_to(rep, carol)
    report(rep, sent, "5.1.1")
    bounce = Message.objects.get(kind="bounce")

    personal_mail_consumer.deliver(rep.mailbox, [bounce], backfill=False)

    assert TimelineEvent.objects.filter(contact=carol, detail__event="bounced").count() == 1
