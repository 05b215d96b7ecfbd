"""A CRM email whose send failed, or whose outcome is unknown, or that bounced: its
sender hears of it; for a sequence's step, the sequence's owner (notifications/)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from crm.enrollments import enrollment_create
from crm.models import Email, StepSend
from crm.sending import email_queue
from crm.steps import steps_send_due
from inboxes import events
from inboxes.models import Message, OutboxState
from inboxes.outbox.outcomes import record_state
from notifications.models import Notification

pytestmark = pytest.mark.django_db


def test_a_failed_one_to_one_email_notifies_its_sender(member, member_mailbox, contacts):
    carol = contacts[0]
    email = email_queue(
        sender=member, contact=carol, mailbox=member_mailbox, subject="Offer", text="Hi"
    )
    record_state(email.message.outbox, OutboxState.FAILED, "550 5.7.1 relaying denied")
    [notice] = Notification.objects.filter(user=member, kind="send_failed")
    assert notice.subject_type == "email" and notice.subject_id == str(email.pk)
    assert notice.url == f"/contacts/{carol.pk}/"
    assert '"Offer" to c0@customer.example.com was not sent' in notice.text


def test_a_sequence_step_of_unknown_outcome_notifies_the_sequences_owner(
    member, admin, sequence, contacts
):
    enrollment = enrollment_create(actor=admin, sequence=sequence, contact=contacts[0])
    steps_send_due(now=timezone.now() + timedelta(days=7))
    step = StepSend.objects.get(enrollment=enrollment, position=1)
    record_state(step.email.message.outbox, OutboxState.UNKNOWN, "the connection dropped")
    [notice] = Notification.objects.filter(kind="send_unknown")
    assert notice.user == member  # the owner, not the admin who enrolled the contact
    assert (notice.subject_type, notice.subject_id) == ("enrollment", str(enrollment.pk))
    assert notice.url == f"/sequences/{sequence.pk}/"


def test_a_bounce_of_a_crm_email_notifies_its_sender(member, member_mailbox, contacts):
    email = email_queue(
        sender=member, contact=contacts[1], mailbox=member_mailbox, subject="Hi", text="Hi"
    )
    report = Message.objects.create(
        account=member.account,
        dedupe_key="report-1",
        kind="bounce",
        bounce={
            "original_message_id": email.message.message_id,
            "recipients": [
                {
                    "address": "c1@customer.example.com",
                    "status": "5.1.1",
                    "action": "failed",
                    "diagnostic": "mailbox does not exist",
                }
            ],
        },
        bounce_of=email.message,
    )
    events.report_bounce(report.pk)
    [notice] = Notification.objects.filter(user=member, kind="email_bounced")
    assert notice.subject_id == str(email.pk)
    assert "c1@customer.example.com: mailbox does not exist" in notice.text
    assert Email.objects.filter(pk=email.pk).exists()
