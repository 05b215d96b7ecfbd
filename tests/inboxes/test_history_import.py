"""How much history a mailbox imports: chosen on connect (API, pages), made larger
later ("Import older mail"), against a real Dovecot with old-dated mail."""

from __future__ import annotations

import os
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from conversations.models import Conversation
from conversations.services import routing_rule_set
from inboxes.models import Mailbox, MailboxFolder, MailboxMessage, Message
from inboxes.providers.imap import session as imap_session
from inboxes.sync import history as history_sync
from inboxes.sync import mailbox_sync
from inboxes.sync.folders import ALL_MAIL_FROM
from tests.support.mail import connect_imap_mailbox, make_email, team_inbox

pytestmark = pytest.mark.django_db

DAY = 86400


def deliver_aged(dovecot, user, days: float, **email) -> None:
    """Mail that arrived ``days`` ago (Maildir's INTERNALDATE is the file's mtime)."""
    when = time.time() - days * DAY
    path = dovecot.deliver(user[0], make_email(date=timezone.now() - timedelta(days=days), **email))
    os.utime(path, (when, when))


def subjects() -> list[str]:
    return sorted(Message.objects.values_list("subject", flat=True))


def connect_api(client, payload):
    return client.post("/api/v1/mailboxes/", payload, format="json")


def import_history(client, mailbox_id, backfill_days):
    return client.post(
        f"/api/v1/mailboxes/{mailbox_id}/import-history/",
        {"backfill_days": backfill_days},
        format="json",
    )


# --- chosen on connect ------------------------------------------------------------------------


def test_connecting_with_only_new_mail_imports_nothing_old_and_new_mail_is_routed(
    admin, admin_api, member, dovecot, mail_user, connect_payload
):
    deliver_aged(dovecot, mail_user, 200, subject="Half a year ago")
    deliver_aged(dovecot, mail_user, 3, subject="Three days ago")
    inbox = team_inbox(admin.account)
    routing_rule_set(actor=admin, inbox=inbox, mode="round_robin", users=[member])
    payload = connect_payload(
        "support@acme.example.com", kind="team", inbox=str(inbox.pk), backfill_days=0
    )

    response = connect_api(admin_api, payload)

    assert response.status_code == 201, response.json()
    assert response.json()["backfill_days"] == 0
    mailbox_sync(response.json()["id"])
    assert subjects() == [] and not MailboxMessage.objects.exists()

    dovecot.deliver(mail_user[0], make_email(subject="Just now"))
    mailbox_sync(response.json()["id"])
    [conversation] = Conversation.objects.filter(inbox=inbox)
    assert (conversation.subject, conversation.assignee) == ("Just now", member)


def test_connecting_with_a_year_imports_a_200_day_old_message_but_not_a_400_day_old_one(
    admin, admin_api, dovecot, mail_user, connect_payload
):
    deliver_aged(dovecot, mail_user, 200, subject="200 days ago")
    deliver_aged(dovecot, mail_user, 400, subject="400 days ago")
    inbox = team_inbox(admin.account)
    payload = connect_payload(
        "support@acme.example.com", kind="team", inbox=str(inbox.pk), backfill_days=365
    )

    response = connect_api(admin_api, payload)

    assert response.status_code == 201, response.json()
    assert response.json()["backfill_days"] == 365
    mailbox_sync(response.json()["id"])
    assert subjects() == ["200 days ago"]
    event = AuditEvent.objects.get(action="mailbox.connected")
    assert event.data["backfill_days"] == 365


@pytest.mark.parametrize("value", [45, -1, 3651, True, "all", "", [30]])
def test_a_window_that_is_not_offered_is_refused_on_connect(admin_api, connect_payload, value):
    payload = connect_payload("support@acme.example.com", kind="team", backfill_days=value)
    response = connect_api(admin_api, payload)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
    assert "backfill_days" in response.json()["errors"]
    assert not Mailbox.objects.exists()


def test_connecting_without_a_choice_imports_30_days_and_null_imports_all(
    member_api, connect_payload
):
    default = connect_api(member_api, connect_payload("bo@acme.example.com")).json()
    everything = connect_api(
        member_api, connect_payload("bo.lee@acme.example.com", backfill_days=None)
    ).json()
    assert (default["backfill_days"], everything["backfill_days"]) == (30, None)
    assert Mailbox.objects.get(pk=everything["id"]).backfill_days is None


# --- import older mail later -------------------------------------------------------------------


def test_importing_older_mail_later_brings_it_in_quietly_once_and_shows_progress(
    client, admin, admin_api, member, dovecot, smtp_server, mail_user, monkeypatch
):
    deliver_aged(dovecot, mail_user, 400, subject="Very old", sender="dave@customer.example.com")
    deliver_aged(dovecot, mail_user, 200, subject="Invoice", sender="carol@customer.example.com")
    deliver_aged(dovecot, mail_user, 10, subject="Re: Invoice", sender="carol@customer.example.com")
    inbox = team_inbox(admin.account)
    routing_rule_set(actor=admin, inbox=inbox, mode="round_robin", users=[member])
    mailbox = connect_imap_mailbox(
        actor=admin,
        dovecot=dovecot,
        smtp_server=smtp_server,
        user=mail_user,
        address="support@acme.example.com",
        inbox=inbox,
        backfill_days=90,
    )
    mailbox_sync(mailbox.pk)
    assert subjects() == ["Re: Invoice"]
    Conversation.objects.filter(inbox=inbox).update(status="closed", closed_at=timezone.now())
    folder = MailboxFolder.objects.get(mailbox=mailbox, role="inbox")
    window_before = folder.backfill_from
    client.force_login(admin)
    page = client.get(f"/settings/mailboxes/{mailbox.pk}/").content.decode()
    assert f"so far, mail since {timezone.localtime(window_before):%-d %B %Y}" in page

    # Older mail, all of it, while the UI shows how far it got.
    response = import_history(admin_api, mailbox.pk, None)
    assert response.status_code == 200, response.json()
    assert response.json()["backfill_days"] is None
    assert AuditEvent.objects.filter(action="mailbox.history_import").count() == 1
    monkeypatch.setattr(imap_session, "FETCH_BATCH_MESSAGES", 1)
    progress, rows = [], []
    real_ingest = history_sync.ingest_batch

    def watched(**kwargs):
        row = Mailbox.objects.get(pk=mailbox.pk)
        progress.append((row.status, row.sync_state, row.sync_done, row.sync_total))
        rows.append(client.get(f"/settings/mailboxes/{mailbox.pk}/row/").content.decode())
        assert kwargs["backfill"] is True
        return real_ingest(**kwargs)

    monkeypatch.setattr(history_sync, "ingest_batch", watched)
    result = mailbox_sync(mailbox.pk)

    assert (result.imported, result.history) == (2, 2)
    assert progress == [("syncing", "history", 0, 2), ("syncing", "history", 1, 2)]
    assert "Importing older mail · 1 of 2 messages" in rows[-1]
    assert 'hx-trigger="every 2s"' in rows[-1]  # polled while it imports
    assert subjects() == ["Invoice", "Re: Invoice", "Very old"]
    # Stored once: one ledger key and one Message per email.
    assert MailboxMessage.objects.count() == Message.objects.count() == 3
    # Filed quietly: the history conversation has no assignee, the closed one stays closed.
    invoice = Conversation.objects.get(inbox=inbox, subject="Re: Invoice")
    assert (invoice.status, invoice.message_count, invoice.assignee) == ("closed", 2, None)
    very_old = Conversation.objects.get(inbox=inbox, subject="Very old")
    assert (very_old.status, very_old.assignee) == ("open", None)
    folder.refresh_from_db()
    assert folder.backfill_from == ALL_MAIL_FROM < window_before
    assert folder.imported_count == 3
    body = admin_api.get(f"/api/v1/mailboxes/{mailbox.pk}/").json()
    assert body["sync"]["state"] == "idle" and body["status"] == "connected"
    assert (body["sync"]["done"], body["sync"]["total"]) == (2, 2)
    assert body["folders"][0]["backfill_from"].startswith("1970-01-01")
    page = client.get(f"/settings/mailboxes/{mailbox.pk}/").content.decode()
    assert "<strong>All mail</strong>" in page and "so far" not in page

    # Again changes nothing, and new mail is still routed as ever.
    monkeypatch.setattr(history_sync, "ingest_batch", real_ingest)
    assert import_history(admin_api, mailbox.pk, None).status_code == 200
    assert mailbox_sync(mailbox.pk).imported == 0
    dovecot.deliver(mail_user[0], make_email(subject="Fresh", sender="erin@customer.example.com"))
    assert mailbox_sync(mailbox.pk).imported == 1
    assert Conversation.objects.get(inbox=inbox, subject="Fresh").assignee == member
    assert MailboxMessage.objects.count() == Message.objects.count() == 4


def test_a_larger_window_imports_only_the_older_part_and_an_interrupted_import_resumes(
    admin, dovecot, smtp_server, mail_user, monkeypatch
):
    deliver_aged(dovecot, mail_user, 400, subject="400 days ago")
    deliver_aged(dovecot, mail_user, 200, subject="200 days ago")
    deliver_aged(dovecot, mail_user, 100, subject="100 days ago")
    deliver_aged(dovecot, mail_user, 5, subject="5 days ago")
    inbox = team_inbox(admin.account)
    mailbox = connect_imap_mailbox(
        actor=admin,
        dovecot=dovecot,
        smtp_server=smtp_server,
        user=mail_user,
        address="support@acme.example.com",
        inbox=inbox,
    )
    mailbox_sync(mailbox.pk)
    assert subjects() == ["5 days ago"]
    listings = []
    real_keys = imap_session.ImapSession.keys_since

    def listed(self, folder, since, before=None):
        keys = real_keys(self, folder, since, before)
        listings.append((since, before, len(keys)))
        return keys

    monkeypatch.setattr(imap_session.ImapSession, "keys_since", listed)
    monkeypatch.setattr(imap_session, "FETCH_BATCH_MESSAGES", 1)
    history_import(admin, mailbox, 365)

    # The first run dies after one of the two older messages is stored.
    real_ingest = history_sync.ingest_batch
    calls = []

    def dies_on_the_second(**kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise ConnectionResetError("worker killed")
        return real_ingest(**kwargs)

    monkeypatch.setattr(history_sync, "ingest_batch", dies_on_the_second)
    with pytest.raises(ConnectionResetError):
        mailbox_sync(mailbox.pk)
    assert subjects() == ["200 days ago", "5 days ago"]
    folder = MailboxFolder.objects.get(mailbox=mailbox, role="inbox")
    assert folder.backfill_from > timezone.now() - timedelta(days=40)  # not moved yet

    monkeypatch.setattr(history_sync, "ingest_batch", real_ingest)
    assert mailbox_sync(mailbox.pk).history == 1  # only the one not stored yet
    assert subjects() == ["100 days ago", "200 days ago", "5 days ago"]
    # Only older mail was listed: before the old window start, since the new one.
    (since, before, count), *_ = listings
    assert before is not None and before < timezone.now() - timedelta(days=29)
    assert since is not None and since < timezone.now() - timedelta(days=364)
    assert count == 2
    folder.refresh_from_db()
    assert (
        abs((folder.backfill_from - (timezone.now() - timedelta(days=365))).total_seconds()) < 600
    )
    assert MailboxMessage.objects.count() == Message.objects.count() == 3


def history_import(actor, mailbox, days):
    from inboxes.history import mailbox_import_history

    return mailbox_import_history(actor=actor, mailbox=mailbox, backfill_days=days)


# --- who may, and what is refused --------------------------------------------------------------


def test_only_an_admin_imports_a_team_mailboxs_history_and_only_the_owner_a_personal_ones(
    admin_api, member_api, outsider_api, connect_payload
):
    team = connect_api(admin_api, connect_payload("support@acme.example.com", kind="team"))
    personal = connect_api(member_api, connect_payload("bo@acme.example.com"))
    team_id, personal_id = team.json()["id"], personal.json()["id"]

    # A member does not see a team email (as for every other action on it): 404.
    refused = import_history(member_api, team_id, 365)
    assert refused.status_code == 404 and refused.json()["code"] == "not_found"
    # An admin sees a member's personal email, but only its owner may do this: 403.
    forbidden = import_history(admin_api, personal_id, 365)
    assert forbidden.status_code == 403
    assert forbidden.json()["code"] == "permission_denied"
    assert AuditEvent.objects.filter(action="mailbox.import_history_refused").count() == 1
    # Another account's mailbox is not found.
    assert import_history(outsider_api, team_id, 365).status_code == 404
    assert import_history(outsider_api, personal_id, None).json()["code"] == "not_found"
    assert {m.backfill_days for m in Mailbox.objects.all()} == {30}

    assert import_history(admin_api, team_id, 365).json()["backfill_days"] == 365
    assert import_history(member_api, personal_id, None).json()["backfill_days"] is None


def test_a_smaller_window_is_refused_and_nothing_is_deleted(
    admin, admin_api, connect_payload, dovecot, mail_user
):
    deliver_aged(dovecot, mail_user, 200, subject="200 days ago")
    inbox = team_inbox(admin.account)
    created = connect_api(
        admin_api,
        connect_payload(
            "support@acme.example.com", kind="team", inbox=str(inbox.pk), backfill_days=365
        ),
    ).json()
    mailbox_sync(created["id"])
    assert subjects() == ["200 days ago"]

    for smaller in (90, 30, 0):
        response = import_history(admin_api, created["id"], smaller)
        assert response.status_code == 400, smaller
        assert response.json()["code"] == "invalid"
        assert "backfill_days" in response.json()["errors"]
    for not_offered in (45, "all", True, ""):
        assert import_history(admin_api, created["id"], not_offered).status_code == 400
    assert admin_api.post(
        f"/api/v1/mailboxes/{created['id']}/import-history/", {}, format="json"
    ).json()["errors"] == {"backfill_days": ["This field is required."]}
    assert import_history(admin_api, created["id"], 365).status_code == 200  # the same: no-op
    assert import_history(admin_api, created["id"], None).status_code == 200
    assert import_history(admin_api, created["id"], 365).status_code == 400  # all is the largest
    assert Mailbox.objects.get().backfill_days is None
    assert subjects() == ["200 days ago"] and MailboxMessage.objects.count() == 1


def test_a_disconnected_mailbox_imports_no_history(member_api, connect_payload):
    created = connect_api(member_api, connect_payload("bo@acme.example.com")).json()
    member_api.delete(f"/api/v1/mailboxes/{created['id']}/")
    response = import_history(member_api, created["id"], 365)
    assert response.status_code == 400 and response.json()["code"] == "invalid"


# --- the pages -----------------------------------------------------------------------------------


def form_of(payload: dict, **extra) -> dict:
    form = {"address": payload["address"], **extra}
    for server in ("imap", "smtp"):
        for key, value in payload[server].items():
            form[f"{server}_{key}"] = value
    return form


def test_the_connect_forms_offer_the_history_choices_and_keep_the_one_chosen(
    client, admin, member, connect_payload
):
    options = (
        '<option value="0">Only new mail</option>',
        '<option value="30" selected>The last 30 days</option>',
        '<option value="90">The last 90 days</option>',
        '<option value="365">The last year</option>',
        '<option value="all">All mail</option>',
    )
    client.force_login(member)
    page = client.get("/settings/email/").content.decode()
    assert 'name="backfill_days" id="id_personal_backfill_days"' in page
    assert all(option in page for option in options)
    response = client.post(
        "/settings/email/", form_of(connect_payload("bo@acme.example.com"), backfill_days="all")
    )
    assert response.status_code == 302
    assert Mailbox.objects.get(owner=member).backfill_days is None
    refused = client.post(
        "/settings/email/", form_of(connect_payload("bo.lee@acme.example.com"), backfill_days="45")
    )
    assert refused.status_code == 400 and Mailbox.objects.count() == 1

    client.force_login(admin)
    inbox = team_inbox(admin.account)
    page = client.get("/settings/inboxes/").content.decode()
    assert 'id="id_team_backfill_days"' in page and all(option in page for option in options)
    response = client.post(
        f"/settings/inboxes/{inbox.pk}/connect/",
        form_of(
            connect_payload("support@acme.example.com", kind="team"),
            backfill_days="365",
            acknowledge_team_visibility="on",
        ),
    )
    assert response.status_code == 302
    assert Mailbox.objects.get(kind="team").backfill_days == 365


def test_the_mailbox_page_offers_older_mail_to_who_may_import_it(
    client, admin, member, admin_api, member_api, connect_payload
):
    team_id = connect_api(
        admin_api, connect_payload("support@acme.example.com", kind="team", backfill_days=90)
    ).json()["id"]
    personal_id = connect_api(member_api, connect_payload("bo@acme.example.com")).json()["id"]

    client.force_login(admin)
    page = client.get(f"/settings/mailboxes/{team_id}/").content.decode()
    assert "The last 90 days" in page and 'id="import-history"' in page
    offered = page.split('id="import-history"')[1].split("</form>")[0]
    assert '<option value="365">' in offered and '<option value="all">' in offered
    assert '<option value="30">' not in offered and '<option value="0">' not in offered
    # An admin sees a member's personal email, but the button is the owner's.
    assert (
        'id="import-history"'
        not in client.get(f"/settings/mailboxes/{personal_id}/").content.decode()
    )

    response = client.post(
        f"/settings/mailboxes/{team_id}/import-history/", {"backfill_days": "365"}
    )
    assert response.status_code == 302
    assert Mailbox.objects.get(pk=team_id).backfill_days == 365
    shrink = client.post(
        f"/settings/mailboxes/{team_id}/import-history/", {"backfill_days": "90"}, follow=True
    )
    assert "a window is never made smaller" in shrink.content.decode()
    assert Mailbox.objects.get(pk=team_id).backfill_days == 365

    client.force_login(member)
    assert (
        'id="import-history"' in client.get(f"/settings/mailboxes/{personal_id}/").content.decode()
    )
    client.post(f"/settings/mailboxes/{personal_id}/import-history/", {"backfill_days": "all"})
    assert Mailbox.objects.get(pk=personal_id).backfill_days is None
    page = client.get(f"/settings/mailboxes/{personal_id}/").content.decode()
    assert "All mail" in page and 'id="import-history"' not in page  # nothing larger left
