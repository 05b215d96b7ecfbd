"""R10 reply logging: a personal mailbox's sync (real Dovecot, INBOX and Sent) keeps
exactly the mail exchanged with contacts, logs it on their timelines threaded to what
it answers, and stops their sequences on a reply."""

from __future__ import annotations

import email
from email import policy
from pathlib import Path

import pytest
from django.apps import apps
from django.conf import settings
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from conversations.models import Conversation
from crm.models import Email, Enrollment, Preferences, TimelineEvent
from crm.sending import email_queue
from inboxes.mime import parse_message
from inboxes.models import MailboxFolder, MailboxMessage, Message
from inboxes.providers.base import RawMessage
from inboxes.sync import mailbox_sync
from inboxes.sync.ingest import ingest_batch
from tests.support.crm_mail import REP, connect_rep, contact, enrol, ingest_classified
from tests.support.mail import connect_imap_mailbox, make_email, send_due, team_inbox

pytestmark = pytest.mark.django_db

CAROL = "carol@customer.example.com"


@pytest.fixture
def rep(member, dovecot, smtp_server, mail_user):
    """Bo's personal mailbox, synced once (empty): later mail is new, not history."""
    rep = connect_rep(member, dovecot, smtp_server, mail_user)
    mailbox_sync(rep.mailbox.pk)
    return rep


@pytest.fixture
def carol(account, member):
    return contact(account, "Carol@Customer.example.com", owner=member)


def header(raw: bytes, name: str) -> str:
    return str(email.message_from_bytes(raw, policy=policy.default)[name] or "")


def crm_email_sent(rep, carol, smtp_server, subject="Our offer"):
    """An email from the CRM to Carol, sent by the send run to aiosmtpd (its copy is
    appended to Bo's Sent folder, as a mail client keeps it)."""
    with transaction.atomic():
        sent = email_queue(
            sender=rep.user, contact=carol, mailbox=rep.mailbox, subject=subject, text="Hi Carol"
        )
    assert send_due(sent.message.outbox) == "sent"
    [received] = [m for m in smtp_server.messages if header(m.data, "Subject") == subject]
    return sent, received


def test_a_contacts_reply_is_logged_inbound_and_threaded_to_the_crm_email_it_answers(
    rep, carol, dovecot, smtp_server
):
    sent, received = crm_email_sent(rep, carol, smtp_server)
    sent_id = header(received.data, "Message-ID")
    assert sent_id == sent.message.message_id

    reply = make_email(
        sender=f"Carol <{CAROL}>",
        to=REP,
        subject="Re: Our offer",
        in_reply_to=sent_id,
        references=sent_id,
    )
    dovecot.deliver(rep.mail_user[0], reply)
    mailbox_sync(rep.mailbox.pk)

    logged = Email.objects.get(contact=carol, direction="inbound")
    assert logged.message.message_id == header(reply, "Message-ID")
    assert logged.replied_to == sent
    assert logged.mailbox == rep.mailbox and logged.logged
    assert logged.at == logged.message.sent_at
    # the CRM email's own copy in Sent is recognised, not logged a second time
    assert Email.objects.filter(contact=carol).count() == 2
    assert MailboxMessage.objects.filter(folder__role="sent", message=sent.message).exists()
    assert sorted(
        TimelineEvent.objects.filter(contact=carol).values_list("email_id", flat=True)
    ) == (sorted([sent.pk, logged.pk]))
    assert mailbox_sync(rep.mailbox.pk).imported == 0  # a rerun changes nothing
    assert Email.objects.filter(contact=carol).count() == 2


def test_the_sent_copy_of_a_crm_email_not_logged_stays_off_the_timeline(rep, carol, smtp_server):
    with transaction.atomic():
        quiet = email_queue(
            sender=rep.user,
            contact=carol,
            mailbox=rep.mailbox,
            subject="Off the record",
            text="Hi",
            log=False,
        )
    assert send_due(quiet.message.outbox) == "sent"
    mailbox_sync(rep.mailbox.pk)  # finds its copy in Sent

    assert MailboxMessage.objects.filter(folder__role="sent", message=quiet.message).exists()
    assert list(Email.objects.filter(contact=carol).values_list("pk", "logged")) == [
        (quiet.pk, False)
    ]
    assert not TimelineEvent.objects.filter(contact=carol).exists()


def test_the_reps_own_reply_from_their_mail_client_is_logged_from_sent(rep, carol, dovecot, member):
    question = make_email(sender=CAROL, to=REP, subject="Pricing?")
    dovecot.deliver(rep.mail_user[0], question)
    answer = make_email(
        sender=f"Bo Lee <{REP}>",
        to=f"Carol <{CAROL}>",
        subject="Re: Pricing?",
        in_reply_to=header(question, "Message-ID"),
        references=header(question, "Message-ID"),
    )
    dovecot.deliver(rep.mail_user[0], answer, folder="Sent")
    mailbox_sync(rep.mailbox.pk)

    inbound = Email.objects.get(contact=carol, direction="inbound")
    outbound = Email.objects.get(contact=carol, direction="outbound")
    assert outbound.message.message_id == header(answer, "Message-ID")
    assert outbound.sent_by == member and outbound.mailbox == rep.mailbox
    assert outbound.replied_to == inbound
    assert TimelineEvent.objects.filter(contact=carol, type="email").count() == 2
    carol.refresh_from_db()
    assert carol.last_activity_at == max(inbound.at, outbound.at)


def _everything_in_the_database() -> str:
    """Every row of every table, as text (the test database is small)."""
    dump = []
    for model in apps.get_models():
        for row in model.objects.all().values():
            dump.append(repr(row))
    return "\n".join(dump)


def test_mail_with_non_contacts_leaves_no_trace_but_the_ledgers_keys(rep, carol, dovecot, account):
    stranger = make_email(
        sender="Dana Private <dana@friends.example.org>",
        to=REP,
        subject="Dinner on Friday zq-secret-1",
        body="See you at eight. zq-secret-2\n",
    )
    with_attachment = email.message_from_bytes(
        make_email(sender="doctor@clinic.example.org", to=REP, subject="Results zq-secret-3"),
        policy=policy.default,
    )
    with_attachment.add_attachment(b"zq-secret-4", maintype="application", subtype="pdf")
    mine = make_email(sender=REP, to="dana@friends.example.org", subject="Re: Dinner zq-secret-5")
    dovecot.deliver(rep.mail_user[0], stranger)
    dovecot.deliver(rep.mail_user[0], with_attachment.as_bytes())
    dovecot.deliver(rep.mail_user[0], mine, folder="Sent")
    assert mailbox_sync(rep.mailbox.pk).imported == 3

    assert Message.objects.count() == 0
    assert Email.objects.count() == 0 and TimelineEvent.objects.count() == 0
    keys = MailboxMessage.objects.filter(folder__mailbox=rep.mailbox)
    assert keys.count() == 3
    assert all(k.message_id is None and k.dedupe_key for k in keys)
    assert "zq-secret" not in _everything_in_the_database()
    assert "friends.example.org" not in _everything_in_the_database()
    for area in ("raw", "attachments"):  # where ingest puts an account's files
        assert not list((Path(settings.MEDIA_ROOT) / area / str(account.pk)).rglob("*"))
    assert mailbox_sync(rep.mailbox.pk).imported == 0  # and never fetched again


def test_never_log_addresses_and_domains_are_never_stored_even_for_contacts(
    rep, carol, dovecot, account, member
):
    dan = contact(account, "dan@partner.example.com")
    eve = contact(account, "eve@lawyer.example.com")
    Preferences.objects.create(
        user=member, never_log=["dan@partner.example.com", "@lawyer.example.com"]
    )
    dovecot.deliver(rep.mail_user[0], make_email(sender=dan.email, to=REP, subject="From Dan"))
    dovecot.deliver(rep.mail_user[0], make_email(sender=eve.email, to=REP, subject="From Eve"))
    # with a contact, but the lawyer is on it too: not stored either
    dovecot.deliver(
        rep.mail_user[0], make_email(sender=CAROL, to=REP, cc=eve.email, subject="Contract")
    )
    dovecot.deliver(
        rep.mail_user[0], make_email(sender=REP, to=dan.email, subject="To Dan"), folder="Sent"
    )
    dovecot.deliver(rep.mail_user[0], make_email(sender=CAROL, to=REP, subject="Only Carol"))
    mailbox_sync(rep.mailbox.pk)

    assert list(Message.objects.values_list("subject", flat=True)) == ["Only Carol"]
    assert list(Email.objects.values_list("contact__email", flat=True)) == [carol.email]
    assert not TimelineEvent.objects.filter(contact__in=[dan, eve]).exists()


def test_a_reply_stops_the_active_enrolment(rep, carol, dovecot):
    enrolment = enrol(carol, rep.mailbox)
    dovecot.deliver(rep.mail_user[0], make_email(sender=CAROL, to=REP, subject="Re: Hello"))
    mailbox_sync(rep.mailbox.pk)

    enrolment.refresh_from_db()
    assert (enrolment.state, enrolment.stop_reason) == ("stopped", "replied")
    assert enrolment.next_step_at is None
    assert TimelineEvent.objects.filter(contact=carol, type="sequence").count() == 1


def test_an_auto_reply_is_logged_but_stops_only_a_sequence_that_says_so(
    rep, carol, account, member
):
    kept_going = enrol(carol, rep.mailbox)
    out_of_office = make_email(
        sender=CAROL,
        to=REP,
        subject="Automatic reply: Hello",
        extra_headers={"Auto-Submitted": "auto-replied"},
    )
    ingest_classified(rep.mailbox, out_of_office, kind="auto_reply")
    kept_going.refresh_from_db()
    assert kept_going.state == "active"
    logged = Email.objects.get(contact=carol)
    assert logged.direction == "inbound" and logged.message.kind == "auto_reply"

    dan = contact(account, "dan@partner.example.com")
    strict = enrol(dan, rep.mailbox, stop_on_auto_reply=True)
    ingest_classified(
        rep.mailbox,
        make_email(sender=dan.email, to=REP, subject="Automatic reply: Hello"),
        kind="auto_reply",
    )
    strict.refresh_from_db()
    assert (strict.state, strict.stop_reason) == ("stopped", "replied")


def test_the_first_import_logs_history_without_stopping_sequences(
    member, dovecot, smtp_server, mail_user, account
):
    carol = contact(account, CAROL)
    dovecot.deliver(mail_user[0], make_email(sender=CAROL, to=REP, subject="Last month"))
    rep = connect_rep(member, dovecot, smtp_server, mail_user)
    enrolment = enrol(carol, rep.mailbox)
    mailbox_sync(rep.mailbox.pk)  # the first import: history

    assert Email.objects.filter(contact=carol, direction="inbound").count() == 1
    enrolment.refresh_from_db()
    assert enrolment.state == "active"


def test_the_team_inbox_still_gets_everything_and_the_personal_ledger_links_only_its_own(
    rep, carol, dovecot, smtp_server, admin
):
    team_user = ("teamx" + rep.mail_user[0][:8], "team-password-long")
    dovecot.add_user(*team_user)
    smtp_server.add_user(*team_user)
    inbox = team_inbox(admin.account)
    team = connect_imap_mailbox(
        actor=admin,
        dovecot=dovecot,
        smtp_server=smtp_server,
        user=team_user,
        address="support@acme.example.com",
        inbox=inbox,
    )
    for sender in (CAROL, "dana@friends.example.org"):
        raw = make_email(sender=sender, to="support@acme.example.com", cc=REP, subject=sender)
        dovecot.deliver(team_user[0], raw)
    mailbox_sync(team.pk)
    assert Conversation.objects.filter(inbox=inbox).count() == 2
    assert Message.objects.count() == 2

    # The same two emails reach Bo (cc): only Carol's is his CRM mail.
    for message in Message.objects.all():
        dovecot.deliver(rep.mail_user[0], message.raw.read())
    mailbox_sync(rep.mailbox.pk)
    linked = MailboxMessage.objects.filter(folder__mailbox=rep.mailbox)
    assert sorted(str(k.message.subject) if k.message else "-" for k in linked) == ["-", CAROL]
    assert list(Email.objects.values_list("message__subject", flat=True)) == [CAROL]


def _batch(count: int, sender: str) -> tuple[list[RawMessage], list]:
    raws = [
        RawMessage(key=f"{sender}-{n}", raw=make_email(sender=sender, to=REP)) for n in range(count)
    ]
    return raws, [parse_message(r.raw) for r in raws]


def test_deciding_what_to_keep_costs_no_query_per_message(rep, carol):
    folder = MailboxFolder.objects.get(mailbox=rep.mailbox, role="inbox")

    def queries_for(count: int, sender: str) -> int:
        raws, parsed = _batch(count, sender)
        with CaptureQueriesContext(connection) as captured:
            ingest_batch(
                mailbox=rep.mailbox,
                folder=folder,
                raws=raws,
                cursor=folder.cursor,
                backfill=True,
                parsed=parsed,
            )
        return len(captured)

    assert queries_for(5, "x@stranger.example.org") == queries_for(60, "y@stranger.example.org")
    # and logging a batch of a contact's mail is a few statements, not a few per message
    # (SQLite splits a bulk insert of many rows into a few statements)
    assert queries_for(60, CAROL) <= queries_for(5, CAROL) + 4
    assert Email.objects.filter(contact=carol).count() == 65
    assert Enrollment.objects.count() == 0
