"""Reply logging end to end: a real Celery worker sends the CRM's email to aiosmtpd and
syncs the rep's personal mailbox from Dovecot; only the user's actions run here."""

from __future__ import annotations

import email
from email import policy

import pytest
from django.db import transaction

from crm.models import Email, Enrollment
from crm.sending import email_queue
from inboxes.models import Mailbox, MailboxMessage, Message
from inboxes.tasks import sync_mailbox
from tests.support.crm_mail import REP, connect_rep, contact, enrol
from tests.support.mail import make_email

pytest.register_assert_rewrite("tests.support.workers")
from tests.support.workers import wait_until  # noqa: E402

pytest_plugins = ["tests.support.workers"]
pytestmark = pytest.mark.django_db(transaction=True)

CAROL = "carol@customer.example.com"


def header(raw: bytes, name: str) -> str:
    return str(email.message_from_bytes(raw, policy=policy.default)[name] or "")


def test_the_worker_sends_the_email_and_logs_the_contacts_reply_which_stops_the_sequence(
    engine, member, account, dovecot, smtp_server, mail_user
):
    worker = engine.worker()
    rep = connect_rep(member, dovecot, smtp_server, mail_user)  # its first sync starts
    wait_until(
        lambda: Mailbox.objects.filter(pk=rep.mailbox.pk, sync_state="idle").exists(),
        20,
        "the first sync",
    )
    carol = contact(account, CAROL, owner=member)
    enrolment = enrol(carol, rep.mailbox)
    smtp_server.clear()

    with transaction.atomic():
        sent = email_queue(
            sender=member, contact=carol, mailbox=rep.mailbox, subject="Our offer", text="Hi"
        )
    [received] = smtp_server.wait_for_messages(1, timeout=15)
    assert header(received.data, "Message-ID") == sent.message.message_id
    assert received.rcpt_tos == (CAROL,)

    # Carol answers from her own mail client; and someone else writes to Bo.
    reply = make_email(
        sender=f"Carol <{CAROL}>",
        to=REP,
        subject="Re: Our offer",
        in_reply_to=sent.message.message_id,
        references=sent.message.message_id,
    )
    dovecot.deliver(mail_user[0], reply)
    dovecot.deliver(mail_user[0], make_email(sender="dana@friends.example.org", to=REP))
    sync_mailbox.delay(str(rep.mailbox.pk))

    logged = wait_until(
        lambda: Email.objects.filter(contact=carol, direction="inbound").first(),
        20,
        "the reply logged",
    )
    assert logged.replied_to_id == sent.pk
    assert logged.message.message_id == header(reply, "Message-ID")
    enrolment = wait_until(
        lambda: Enrollment.objects.filter(pk=enrolment.pk, state="stopped").first(),
        5,
        "the sequence stopped",
    )
    assert enrolment.stop_reason == "replied"
    wait_until(
        lambda: Mailbox.objects.filter(pk=rep.mailbox.pk, sync_state="idle").exists(),
        20,
        "the sync to end",
    )
    # Dana's mail: its key only; the CRM's own email and Carol's reply are the only mail.
    assert set(Message.objects.values_list("pk", flat=True)) == {sent.message_id, logged.message_id}
    assert MailboxMessage.objects.filter(folder__mailbox=rep.mailbox, message=None).count() == 1
    assert worker.alive()
