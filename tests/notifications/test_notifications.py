"""Who hears about what (notifications/): incidents, sends, gaps, mentions, assignments;
settings, batching, deactivated people, tenant isolation and the API's shapes."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from accounts.models import Role
from conversations.handling import conversation_assign, conversation_reply, note_create
from inboxes import events
from inboxes.models import Mailbox, MailboxKind, MailboxStatus, OutboxState
from inboxes.outbox.outcomes import record_state
from notifications.mailing import digest_send
from notifications.models import Digest, Incident, Kind, Notification, Setting
from notifications.services import notifications_read_all, settings_update
from tests.support.conversations_factory import make_conversation
from tests.support.factories import UserFactory

pytestmark = pytest.mark.django_db


def broken_mailbox(owner, *, kind=MailboxKind.PERSONAL, error="IMAP login failed: bad password"):
    mailbox = Mailbox.objects.create(
        account=owner.account,
        address=f"{owner.email.split('@')[0]}-mail@acme.example.com",
        canonical_address=f"{owner.email.split('@')[0]}-mail@acme.example.com",
        kind=kind,
        owner=owner if kind == MailboxKind.PERSONAL else None,
        status=MailboxStatus.ERROR,
        last_error=error,
    )
    return mailbox


def mine(user, **filters):
    return list(Notification.objects.filter(user=user, **filters))


# --- mailbox incidents ------------------------------------------------------------------


def test_a_broken_personal_mailbox_notifies_its_owner_once_however_often_it_is_reported(
    member, admin
):
    mailbox = broken_mailbox(member)
    for _ in range(5):  # five failed polls
        events.report_mailbox_health(mailbox.pk)
    [notice] = mine(member)
    assert notice.kind == Kind.MAILBOX_NEEDS_ATTENTION
    assert "the password was refused" in notice.text and mailbox.address in notice.text
    assert notice.url == f"/settings/mailboxes/{mailbox.pk}/"
    assert (notice.subject_type, notice.subject_id) == ("mailbox", str(mailbox.pk))
    assert mine(admin) == []  # the owner can fix it
    assert Incident.objects.filter(resolved_at__isnull=True).count() == 1


def test_recovery_resolves_the_notice_and_a_new_break_is_a_new_incident(member):
    mailbox = broken_mailbox(member)
    events.report_mailbox_health(mailbox.pk)
    Mailbox.objects.filter(pk=mailbox.pk).update(status=MailboxStatus.CONNECTED, last_error="")
    events.report_mailbox_health(mailbox.pk)
    events.report_mailbox_health(mailbox.pk)
    [notice] = mine(member)
    assert notice.resolved_at is not None
    assert "Resolved:" in notice.text and "works again" in notice.text

    Mailbox.objects.filter(pk=mailbox.pk).update(status=MailboxStatus.NEEDS_REAUTH)
    events.report_mailbox_health(mailbox.pk)
    notices = mine(member)
    assert len(notices) == 2
    assert "Sign in again" in notices[0].text  # newest first
    assert Incident.objects.count() == 2


def test_a_team_mailbox_notifies_the_admins_and_a_deactivated_owners_goes_to_them(
    admin, member, account
):
    second_admin = UserFactory(account=account, email="di@acme.example.com", role=Role.ADMIN)
    team = broken_mailbox(admin, kind=MailboxKind.TEAM)
    events.report_mailbox_health(team.pk)
    assert len(mine(admin)) == len(mine(second_admin)) == 1
    assert mine(member) == []

    member.is_active = False
    member.save()
    personal = broken_mailbox(member)
    events.report_mailbox_health(personal.pk)
    assert mine(member) == []  # a deactivated user gets nothing
    assert len(mine(admin)) == 2


def test_the_health_check_opens_and_closes_incidents_the_engine_did_not_report(member):
    from notifications.tasks import check_mailbox_health

    mailbox = broken_mailbox(member)
    assert check_mailbox_health() == 1
    assert len(mine(member)) == 1
    assert check_mailbox_health() == 0
    Mailbox.objects.filter(pk=mailbox.pk).update(status=MailboxStatus.CONNECTED)
    assert check_mailbox_health() == 1
    assert mine(member)[0].resolved_at is not None


# --- sends, gaps ----------------------------------------------------------------------------


def test_a_failed_reply_notifies_the_agent_who_wrote_it(admin, member, support):
    conversation = make_conversation(support[0])
    conversation_assign(actor=admin, conversation=conversation, assignee=admin)
    message = conversation_reply(actor=member, conversation=conversation, text="On it")
    item = message.outbox
    record_state(item, OutboxState.FAILED, "550 5.1.1 mailbox unavailable")
    record_state(item, OutboxState.FAILED, "550 5.1.1 mailbox unavailable")  # reported twice
    [notice] = mine(member, kind=Kind.SEND_FAILED)
    assert "was not sent" in notice.text and "550 5.1.1" in notice.text
    assert notice.url == f"/inbox/c/{conversation.pk}/"
    assert mine(admin, kind=Kind.SEND_FAILED) == []

    other = conversation_reply(actor=member, conversation=conversation, text="Again")
    record_state(other.outbox, OutboxState.UNKNOWN, "the connection dropped after DATA")
    [unknown] = mine(member, kind=Kind.SEND_UNKNOWN)
    assert "may not have arrived" in unknown.text


def test_a_sync_gap_notifies_the_admins(admin, member, support):
    events.report_sync_gap(support[1].pk, "INBOX", 3, 1)
    [notice] = mine(admin, kind=Kind.SYNC_GAP)
    assert "found 3 message(s)" in notice.text and "1 could not be imported" in notice.text
    assert mine(member) == []


# --- mentions and assignments -------------------------------------------------------------


def test_a_mention_notifies_the_person_mentioned_but_not_the_author(admin, member, support):
    conversation = make_conversation(support[0])
    note_create(actor=admin, conversation=conversation, text="@bo can you take this? cc @ann")
    [notice] = mine(member)
    assert notice.kind == Kind.MENTION
    assert "Ann" in notice.text and "can you take this" in notice.text
    assert mine(admin) == []


def test_an_assignment_notifies_the_assignee_unless_they_assigned_themselves(
    admin, member, support
):
    conversation = make_conversation(support[0])
    conversation_assign(actor=admin, conversation=conversation, assignee=member)
    [notice] = mine(member)
    assert notice.kind == Kind.ASSIGNED and "assigned you" in notice.text
    conversation_assign(actor=admin, conversation=conversation, assignee=admin)
    assert mine(admin) == []


# --- settings and email ---------------------------------------------------------------------


def test_settings_are_honoured_per_kind(admin, member, support):
    settings_update(
        user=member,
        changes={Kind.MENTION: {"in_app": False}, Kind.ASSIGNED: {"email": False}},
    )
    conversation = make_conversation(support[0])
    note_create(actor=admin, conversation=conversation, text="@bo look")
    conversation_assign(actor=admin, conversation=conversation, assignee=member)
    mention = Notification.objects.get(user=member, kind=Kind.MENTION)
    assigned = Notification.objects.get(user=member, kind=Kind.ASSIGNED)
    assert (mention.in_app, mention.email_pending) == (False, True)
    assert (assigned.in_app, assigned.email_pending) == (True, False)

    settings_update(user=member, changes={Kind.SYNC_GAP: {"in_app": False, "email": False}})
    member.role = Role.ADMIN
    member.save()
    events.report_sync_gap(support[1].pk, "INBOX", 1, 0)
    assert not Notification.objects.filter(user=member, kind=Kind.SYNC_GAP).exists()


def test_emails_are_batched_one_per_person_per_window(member, settings):
    settings.NOTIFICATION_EMAIL_MINUTES = 5
    first = broken_mailbox(member)
    events.report_mailbox_health(first.pk)
    assert digest_send(member.pk) == 1
    assert len(mail.outbox) == 1
    sent = mail.outbox[0]
    assert sent.to == [member.email]
    assert sent.extra_headers["Auto-Submitted"] == "auto-generated"  # core/mail.py
    assert f"/settings/mailboxes/{first.pk}/" in sent.body

    # two more things happen within the window: no email now
    for name in ("second", "third"):
        mailbox = Mailbox.objects.create(
            account=member.account,
            address=f"{name}@acme.example.com",
            canonical_address=f"{name}@acme.example.com",
            kind=MailboxKind.PERSONAL,
            owner=member,
            status=MailboxStatus.ERROR,
            last_error=f"{name} broke",
        )
        events.report_mailbox_health(mailbox.pk)
    assert digest_send(member.pk) == 0
    assert len(mail.outbox) == 1

    # after the window: one email listing both
    Digest.objects.filter(user=member).update(last_sent_at=timezone.now() - timedelta(minutes=6))
    assert digest_send(member.pk) == 2
    assert len(mail.outbox) == 2
    assert "2 things happened" in mail.outbox[1].subject
    assert "second broke" in mail.outbox[1].body and "third broke" in mail.outbox[1].body
    assert not Notification.objects.filter(user=member, email_pending=True).exists()


def test_a_deactivated_person_is_not_emailed_what_was_pending(member):
    events.report_mailbox_health(broken_mailbox(member).pk)
    member.is_active = False
    member.save()
    assert digest_send(member.pk) == 0
    assert mail.outbox == []
    assert not Notification.objects.filter(email_pending=True).exists()


# --- the API --------------------------------------------------------------------------------


def test_the_api_lists_marks_read_and_isolates_tenants(member, member_api, outsider, outsider_api):
    mailbox = broken_mailbox(member)
    events.report_mailbox_health(mailbox.pk)
    events.report_mailbox_health(broken_mailbox(outsider).pk)

    listed = member_api.get("/api/v1/notifications/")
    assert listed.status_code == 200
    [item] = listed.json()["results"]
    assert set(item) >= {"id", "kind", "at", "read", "resolved_at", "text", "url", "subject"}
    assert item["subject"] == {"type": "mailbox", "id": str(mailbox.pk)}
    assert item["read"] is False and item["resolved_at"] is None
    assert listed.json()["next"] is None

    theirs = Notification.objects.get(user=outsider)
    assert member_api.post(f"/api/v1/notifications/{theirs.pk}/read/").status_code == 404
    assert outsider_api.get("/api/v1/notifications/").json()["results"][0]["id"] == str(theirs.pk)

    read = member_api.post(f"/api/v1/notifications/{item['id']}/read/")
    assert read.status_code == 200 and read.json()["read"] is True
    assert member_api.get("/api/v1/notifications/?unread=true").json()["results"] == []
    assert member_api.post("/api/v1/notifications/read-all/").json() == {"marked": 0}
    assert Notification.objects.get(pk=theirs.pk).read_at is None


def test_notification_settings_api(member_api, member):
    got = member_api.get("/api/v1/me/notification-settings/").json()
    assert set(got) == set(Kind.values)
    assert got["mention"] == {"in_app": True, "email": True}
    put = member_api.put(
        "/api/v1/me/notification-settings/", {"mention": {"email": False}}, format="json"
    )
    assert put.status_code == 200
    assert put.json()["mention"] == {"in_app": True, "email": False}
    assert Setting.objects.get(user=member, kind="mention").email is False
    bad = member_api.put(
        "/api/v1/me/notification-settings/", {"no_such_kind": {"email": False}}, format="json"
    )
    assert bad.status_code == 400 and bad.json()["code"] == "invalid"
    assert "no_such_kind" in bad.json()["errors"]


def test_mark_all_read(member):
    events.report_mailbox_health(broken_mailbox(member).pk)
    assert notifications_read_all(user=member) == 1
    assert notifications_read_all(user=member) == 0


def test_a_bounce_tied_to_a_reply_notifies_its_sender(admin, member, support):
    from inboxes.models import Message

    conversation = make_conversation(support[0])
    reply = conversation_reply(actor=member, conversation=conversation, text="Hello")
    report = Message.objects.create(
        account=member.account,
        dedupe_key="bounce-1",
        kind="bounce",
        bounce={
            "original_message_id": reply.message_id,
            "recipients": [
                {
                    "address": "carol@customer.example.com",
                    "action": "failed",
                    "status": "5.1.1",
                    "diagnostic": "mailbox does not exist",
                }
            ],
        },
        bounce_of=reply,
    )
    events.report_bounce(report.pk)
    events.report_bounce(report.pk)
    [notice] = mine(member, kind=Kind.EMAIL_BOUNCED)
    assert "carol@customer.example.com: mailbox does not exist" in notice.text
    assert notice.url == f"/inbox/c/{conversation.pk}/"


def test_no_email_to_a_person_whose_address_is_one_of_the_accounts_mailboxes(
    account, support, settings
):
    # Someone logs in as the team address itself: emailing them would feed the inbox,
    # which would notify them again.
    looped = UserFactory(account=account, email="support@acme.example.com", role=Role.ADMIN)
    events.report_sync_gap(support[1].pk, "INBOX", 2, 0)
    assert Notification.objects.filter(user=looped, in_app=True).exists()
    assert digest_send(looped.pk) == 0
    assert mail.outbox == []
