"""Sequence steps sent by a real Celery worker (and beat) through aiosmtpd: step 2
replies in step 1's thread; each step goes exactly once with two runners racing and
with a worker killed mid-run and started again."""

from __future__ import annotations

import email
from concurrent.futures import ThreadPoolExecutor
from datetime import time
from email import policy
from threading import Barrier

import pytest
from django.db import connections

from crm.contacts import contact_create
from crm.enrollments import enrollment_create, enrollments_create
from crm.models import Enrollment, EnrollmentState, StepSend
from crm.sequences import SequenceInput, StepInput, sequence_create
from crm.steps import steps_send_due
from crm.tasks import send_due_steps
from inboxes.models import Mailbox, OutboxItem, OutboxState
from tests.crm.conftest import open_all_day_zone, personal_mailbox
from tests.support.api import api_client_for
from tests.support.mail import connect_imap_mailbox

pytest.register_assert_rewrite("tests.support.workers")
from tests.support.workers import wait_until  # noqa: E402

pytest_plugins = ["tests.support.workers"]

# Steps run every second in these tests (beat's entry is every minute otherwise).
FAST_STEPS = {"SEQUENCE_STEPS_SECONDS": "1"}


def _sequence(owner, mailbox, *, second_delay=0):
    return sequence_create(
        owner=owner,
        data=SequenceInput(
            name="Onboarding",
            mailbox=mailbox,
            window_start=time(0, 0),
            window_end=time(23, 59, 59),
            timezone=open_all_day_zone(),
            business_days_only=False,
            steps=[
                StepInput(subject="Welcome, {{ contact.first_name }}", text="Hello!"),
                StepInput(text="Did you get started?", delay_days=second_delay),
            ],
        ),
    )


def _header(raw: bytes, name: str) -> str:
    return str(email.message_from_bytes(raw, policy=policy.default)[name] or "")


@pytest.mark.django_db(transaction=True)
def test_steps_go_out_through_smtp_and_step_2_replies_in_step_1s_thread(
    engine, member, dovecot, smtp_server, mail_user
):
    mailbox = connect_imap_mailbox(
        actor=member,
        dovecot=dovecot,
        smtp_server=smtp_server,
        user=mail_user,
        address="bo@acme.example.com",
        kind="personal",
    )
    sequence = _sequence(member, mailbox)
    contact = contact_create(
        account=member.account, email="carol@customer.example.com", name="Carol Jones"
    )
    smtp_server.clear()
    enrollment = enrollment_create(actor=member, sequence=sequence, contact=contact)
    engine.worker()
    engine.beat(env=FAST_STEPS)
    wait_until(lambda: len(smtp_server.messages) >= 2, 60, "both steps at the SMTP server")
    first, second = sorted(
        smtp_server.messages, key=lambda m: _header(m.data, "Subject").startswith("Re: ")
    )
    assert first.rcpt_tos == ("carol@customer.example.com",)
    assert _header(first.data, "Subject") == "Welcome, Carol"
    assert _header(second.data, "Subject") == "Re: Welcome, Carol"
    step_1_id = _header(first.data, "Message-ID")
    assert _header(second.data, "In-Reply-To") == step_1_id
    assert step_1_id in _header(second.data, "References")
    enrollment.refresh_from_db()
    assert enrollment.state == EnrollmentState.FINISHED
    assert enrollment.thread_message_id == step_1_id
    assert len(smtp_server.messages) == 2


def _run_all_at_once(calls):
    barrier = Barrier(len(calls))

    def run(call):
        barrier.wait()
        try:
            return call()
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(run, calls))


@pytest.mark.django_db(transaction=True)
def test_two_runners_racing_send_each_step_once(member):
    mailbox = personal_mailbox(member, "bo@acme.example.com")
    sequence = _sequence(member, mailbox, second_delay=5)
    contacts = [
        contact_create(account=member.account, email=f"p{n}@customer.example.com")
        for n in range(60)
    ]
    enrollments_create(actor=member, sequence=sequence, contacts=contacts)
    runs = _run_all_at_once(
        [lambda: steps_send_due(chunk_size=7), lambda: steps_send_due(chunk_size=7)]
    )
    assert sum(run.sent for run in runs) == 60
    assert StepSend.objects.count() == 60
    assert OutboxItem.objects.filter(mailbox=mailbox).count() == 60
    assert set(Enrollment.objects.values_list("steps_sent", flat=True)) == {1}


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_run_and_restarted_sends_each_step_once(
    engine, member, dovecot, smtp_server, mail_user
):
    mailbox = connect_imap_mailbox(
        actor=member,
        dovecot=dovecot,
        smtp_server=smtp_server,
        user=mail_user,
        address="bo@acme.example.com",
        kind="personal",
    )
    # Above the provider's default send limits (inboxes/outbox/limits.py): 400 at once.
    Mailbox.objects.filter(pk=mailbox.pk).update(
        send_limit_per_minute=1000, send_limit_per_day=1000
    )
    sequence = _sequence(member, mailbox, second_delay=30)
    total = 400
    contacts = [
        contact_create(account=member.account, email=f"p{n}@customer.example.com")
        for n in range(total)
    ]
    enrollments_create(actor=member, sequence=sequence, contacts=contacts)
    smtp_server.clear()
    worker = engine.worker(env={"SEQUENCE_STEPS_CHUNK": "10"})
    send_due_steps.delay()
    wait_until(lambda: StepSend.objects.exists(), 60, "the first chunk committed")
    worker.kill()
    sent_at_kill = StepSend.objects.count()
    assert 0 < sent_at_kill < total, sent_at_kill

    # Started again, with beat: the rest goes, nothing twice. A message the killed
    # worker was handing over (its DATA begun) may or may not have gone: it is not in
    # Sent, so it is marked unknown and not sent again (inboxes/outbox/outcomes.py).
    engine.worker(env={"SEQUENCE_STEPS_CHUNK": "10"})
    engine.beat(env=FAST_STEPS)
    wait_until(lambda: StepSend.objects.count() >= total, 120, "every step 1 queued")
    items = OutboxItem.objects.filter(mailbox=mailbox)
    wait_until(
        lambda: not items.filter(state__in=[OutboxState.QUEUED, OutboxState.SENDING]).exists(),
        120,
        "every step 1 sent, or marked unknown",
    )
    assert StepSend.objects.count() == items.count() == total
    unknown = items.filter(state=OutboxState.UNKNOWN).count()
    assert unknown <= 2, unknown  # at most what the killed run had in hand
    assert items.filter(state=OutboxState.SENT).count() == total - unknown
    recipients = [m.rcpt_tos for m in smtp_server.messages]
    assert len(recipients) == len(set(recipients))  # none twice
    assert total - unknown <= len(recipients) <= total
    assert set(Enrollment.objects.values_list("steps_sent", flat=True)) == {1}


@pytest.mark.django_db(transaction=True)
def test_two_enrolments_of_one_contact_at_once_one_wins(member):
    """Two requests at the same moment put one contact in two sequences: one 201, one
    409 contact_in_sequence (the partial unique constraint decides on PostgreSQL)."""
    mailbox = personal_mailbox(member, "bo@acme.example.com")
    first, second = _sequence(member, mailbox), _sequence(member, mailbox)
    contact = contact_create(account=member.account, email="carol@customer.example.com")
    clients = [api_client_for(member), api_client_for(member)]
    answers = _run_all_at_once(
        [
            lambda c=client, s=sequence: c.post(
                f"/api/v1/sequences/{s.pk}/enrollments/",
                {"contact": str(contact.pk)},
                format="json",
            )
            for client, sequence in zip(clients, (first, second), strict=True)
        ]
    )
    assert sorted(a.status_code for a in answers) == [201, 409]
    refused = next(a for a in answers if a.status_code == 409)
    assert refused.json()["code"] == "contact_in_sequence"
    assert Enrollment.objects.filter(contact=contact).count() == 1
