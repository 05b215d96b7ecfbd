"""Sequences as services: validation, enrolment (409), pause/resume/unenrol, the step
run (threading, exactly once, bounced contacts), stats."""

from __future__ import annotations

from datetime import time, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from core.errors import Invalid, PermissionDeniedError
from crm.enrollments import (
    enrollment_create,
    enrollment_pause,
    enrollment_resume,
    enrollment_unenroll,
    enrollments_create,
    enrollments_stop,
)
from crm.errors import ContactInSequence
from crm.models import (
    Enrollment,
    EnrollmentState,
    StepSend,
    StopReason,
    TimelineEvent,
    TimelineType,
)
from crm.sequences import (
    StepInput,
    sequence_create,
    sequence_update,
    sequences_stats,
)
from crm.steps import steps_send_due
from inboxes.models import OutboxItem
from tests.crm.conftest import personal_mailbox, two_steps

pytestmark = pytest.mark.django_db


def _invalid_fields(call) -> dict:
    with pytest.raises(Invalid) as caught:
        call()
    return caught.value.extra["errors"]


def test_validation(member, member_mailbox, admin):
    def make(**overrides):
        return lambda: sequence_create(
            owner=member, data=two_steps(**{"mailbox": member_mailbox, **overrides})
        )

    assert "steps" in _invalid_fields(make(steps=[]))
    assert "steps" in _invalid_fields(make(steps=[StepInput(text="no subject")]))
    assert "steps" in _invalid_fields(make(steps=[StepInput(subject="x", text="y", delay_days=-1)]))
    unknown = _invalid_fields(make(steps=[StepInput(subject="{{ contact.phone }}", text="y")]))
    assert "contact.phone" in unknown["steps"][0]
    assert "timezone" in _invalid_fields(make(timezone="Mars/Olympus"))
    assert "window" in _invalid_fields(make(window_start=time(23, 59)))
    # Someone else's mailbox, or a team one, is not the owner's to send from.
    ann_box = personal_mailbox(admin, "ann@acme.example.com")
    assert "mailbox" in _invalid_fields(make(mailbox=ann_box))


def test_only_owner_or_admin_changes_it(sequence, member, admin, other_member):
    with pytest.raises(PermissionDeniedError):
        sequence_update(actor=other_member, sequence=sequence, data=two_steps(name="Mine"))
    sequence_update(actor=admin, sequence=sequence, data=two_steps(name="Renamed"))
    sequence.refresh_from_db()
    assert sequence.name == "Renamed"
    assert sequence.mailbox.owner == member


def test_contact_in_at_most_one_live_sequence(sequence, member, member_mailbox, contacts):
    other = sequence_create(owner=member, data=two_steps(mailbox=member_mailbox, name="Other"))
    enrollment_create(actor=member, sequence=sequence, contact=contacts[0])
    with pytest.raises(ContactInSequence):
        enrollment_create(actor=member, sequence=other, contact=contacts[0])
    results = enrollments_create(actor=member, sequence=other, contacts=contacts)
    assert [r.refused for r in results] == ["contact_in_sequence", None, None]
    # Once stopped, the contact may be enrolled again.
    enrollments_stop(contacts[0], StopReason.REPLIED)
    enrollment_create(actor=member, sequence=other, contact=contacts[0])


def test_pause_resume_unenroll(sequence, member, other_member, contacts):
    enrollment = enrollment_create(actor=member, sequence=sequence, contact=contacts[0])
    assert enrollment.next_step_at is not None
    with pytest.raises(PermissionDeniedError):
        enrollment_pause(actor=other_member, enrollment=enrollment)
    enrollment_pause(actor=member, enrollment=enrollment)
    assert (enrollment.state, enrollment.next_step_at) == (EnrollmentState.PAUSED, None)
    assert steps_send_due().sent == 0  # a paused enrolment sends nothing
    enrollment_resume(actor=member, enrollment=enrollment)
    assert enrollment.state == EnrollmentState.ACTIVE
    assert enrollment.next_step_at is not None
    assert enrollment.next_step_at <= timezone.now() + timedelta(seconds=5)
    enrollment_unenroll(actor=member, enrollment=enrollment)
    assert (enrollment.state, enrollment.stop_reason) == (
        EnrollmentState.STOPPED,
        StopReason.UNENROLLED,
    )
    with pytest.raises(Invalid):
        enrollment_resume(actor=member, enrollment=enrollment)
    events = TimelineEvent.objects.filter(contact=contacts[0], type=TimelineType.SEQUENCE)
    assert sorted(e.detail["event"] for e in events) == [
        "enrolled",
        "paused",
        "resumed",
        "stopped",
    ]


def test_step_run_threads_and_finishes(sequence, member, contacts):
    enrollment = enrollment_create(actor=member, sequence=sequence, contact=contacts[0])
    run = steps_send_due()
    assert run.sent == 1
    enrollment.refresh_from_db()
    assert enrollment.steps_sent == 1
    assert enrollment.thread_message_id
    first = StepSend.objects.get(enrollment=enrollment, position=1).email
    assert first.message.subject == "Hello Carol0"
    assert "how is Co?" in first.message.text
    # Step 2 is due two days later, not before.
    assert enrollment.next_step_at > timezone.now() + timedelta(days=1)
    assert steps_send_due().sent == 0
    run = steps_send_due(now=timezone.now() + timedelta(days=3))
    assert (run.sent, run.finished) == (1, 1)
    second = StepSend.objects.get(enrollment=enrollment, position=2).email
    assert second.message.subject == "Re: Hello Carol0"
    assert second.message.in_reply_to == enrollment.thread_message_id
    enrollment.refresh_from_db()
    assert enrollment.state == EnrollmentState.FINISHED
    assert OutboxItem.objects.filter(mailbox=sequence.mailbox).count() == 2
    # Nothing is sent twice, however often the run goes.
    assert steps_send_due(now=timezone.now() + timedelta(days=30)).sent == 0
    assert StepSend.objects.count() == 2
    events = TimelineEvent.objects.filter(contact=contacts[0], type=TimelineType.SEQUENCE)
    assert sorted((e.detail["event"], e.detail.get("step")) for e in events) == [
        ("enrolled", None),
        ("finished", None),
        ("step_sent", 1),
        ("step_sent", 2),
    ]
    emails = TimelineEvent.objects.filter(contact=contacts[0], type=TimelineType.EMAIL)
    assert {e.email_id for e in emails} == {first.pk, second.pk}


def test_a_stale_runner_does_not_send_twice(sequence, member, contacts):
    """Two runners that read the same due enrolment: the second one's conditional
    update finds it moved on, and the unique StepSend backs that up."""
    enrollment = enrollment_create(actor=member, sequence=sequence, contact=contacts[0])
    from crm.steps import StepRun, _RunCache, _send_one

    stale = Enrollment.objects.select_related("sequence", "sequence__owner", "contact").get(
        pk=enrollment.pk
    )
    assert steps_send_due().sent == 1
    run = StepRun()
    _send_one(stale, _RunCache(), run, timezone.now())
    assert (run.sent, run.skipped) == (0, 1)
    assert StepSend.objects.filter(enrollment=enrollment).count() == 1


def test_hard_bounced_contact_is_stopped_not_sent(sequence, member, contacts):
    enrollment = enrollment_create(actor=member, sequence=sequence, contact=contacts[0])
    contacts[0].bounced_at = timezone.now()
    contacts[0].save(update_fields=["bounced_at"])
    run = steps_send_due()
    assert (run.sent, run.bounced) == (0, 1)
    enrollment.refresh_from_db()
    assert (enrollment.state, enrollment.stop_reason) == (
        EnrollmentState.STOPPED,
        StopReason.BOUNCED,
    )
    assert not OutboxItem.objects.exists()


def test_html_values_escaped_in_the_sent_email(member, member_mailbox):
    from crm.contacts import contact_create

    evil = contact_create(
        account=member.account, owner=member, email="e@x.example", name="<script>x</script>"
    )
    sequence = sequence_create(owner=member, data=two_steps(mailbox=member_mailbox))
    enrollment_create(actor=member, sequence=sequence, contact=evil)
    steps_send_due()
    message = StepSend.objects.get().email.message
    assert "<script>" not in message.html
    assert "&lt;script&gt;" in message.html


def test_stats_in_a_fixed_number_of_queries(sequence, member, member_mailbox, contacts):
    other = sequence_create(owner=member, data=two_steps(mailbox=member_mailbox, name="Other"))
    enrollments_create(actor=member, sequence=sequence, contacts=contacts[:2])
    enrollment_create(actor=member, sequence=other, contact=contacts[2])
    steps_send_due()
    enrollments_stop(contacts[0], StopReason.REPLIED)
    sent = StepSend.objects.get(enrollment__contact=contacts[1]).email
    sent.opens, sent.clicks = 2, 1
    sent.save()
    with CaptureQueriesContext(connection) as queries:
        stats = sequences_stats([sequence.pk, other.pk])
    assert len(queries) == 2
    assert stats[sequence.pk] == {
        "enrolled": 2,
        "active": 1,
        "sent": 2,
        "opened": 1,
        "clicked": 1,
        "replied": 1,
        "bounced": 0,
    }
    assert stats[other.pk]["sent"] == 1


def test_step_1_waits_for_the_window(member, member_mailbox, contacts):
    from crm.windows import Window, next_send_moment

    sequence = sequence_create(
        owner=member,
        data=two_steps(
            mailbox=member_mailbox,
            window_start=time(3, 0),
            window_end=time(3, 30),
            timezone="Asia/Tokyo",
            business_days_only=True,
        ),
    )
    window = Window(time(3), time(3, 30), "Asia/Tokyo")
    # The service reads its own clock: inside the window "now" moves on between the
    # two reads, so the moment it picks lies between the window's answers for them.
    before = timezone.now()
    enrollment = enrollment_create(actor=member, sequence=sequence, contact=contacts[0])
    after = timezone.now()
    opens = enrollment.next_step_at
    assert next_send_moment(window, before) <= opens <= next_send_moment(window, after)
    assert next_send_moment(window, opens) == opens
    assert opens.astimezone(ZoneInfo("Asia/Tokyo")).weekday() < 5
    if opens > enrollment.created_at:
        assert steps_send_due(now=opens - timedelta(seconds=1)).sent == 0
    assert steps_send_due(now=opens).sent == 1


def test_a_disconnected_mailbox_holds_the_steps_without_failing_the_run(
    sequence, member, member_mailbox, contacts
):
    enrollment = enrollment_create(actor=member, sequence=sequence, contact=contacts[0])
    member_mailbox.status = "disconnected"
    member_mailbox.save(update_fields=["status"])
    run = steps_send_due()
    assert (run.sent, run.held) == (0, 1)
    enrollment.refresh_from_db()
    assert enrollment.state == EnrollmentState.ACTIVE
    assert enrollment.next_step_at > timezone.now() + timedelta(minutes=50)
    assert not OutboxItem.objects.exists()
