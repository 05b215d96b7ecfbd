"""The agent's flow through Django's test client and the services: mentions (who may
be mentioned, ambiguous names, the Mentions view, the API's refusal), replying takes
an unassigned conversation, closing leads to the next one, saved replies, snooze and
wake-up, the composer's Cc/Bcc and formatting.

The browser side (autocomplete, formatting) is tests/browser/test_browser_agent.py."""

from __future__ import annotations

import email
import json
import re
from datetime import timedelta
from email import policy

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from accounts.models import Team
from conversations.handling import conversation_reply, conversation_set_status, note_create
from conversations.models import Conversation, ConversationEvent, Note, SavedReply
from conversations.snooze import conversation_snooze, conversations_wake
from conversations.threading import thread_into_inbox
from core.errors import Invalid
from inboxes.models import Inbox, Mailbox, OutboxItem
from inboxes.outbox import Attachment
from notifications.models import Kind, Notification
from tests.support.conversations_factory import make_conversation, make_message
from tests.support.factories import UserFactory

pytestmark = pytest.mark.django_db

SUPPORT = "support@acme.example.com"
MB = 1024 * 1024


@pytest.fixture
def support(account):
    mailbox = Mailbox.objects.create(
        account=account,
        kind="team",
        address=SUPPORT,
        canonical_address=SUPPORT,
        imap_host="imap.acme.example.com",
        status="connected",
    )
    return Inbox.objects.create(
        account=account, name="Support", mailbox=mailbox, from_name="Acme Support"
    )


@pytest.fixture
def vip(account, other_member):
    """Only the VIP team (Cy) and admins see it."""
    team = Team.objects.create(account=account, name="VIP desk")
    team.members.add(other_member)
    inbox = Inbox.objects.create(account=account, name="VIP", restricted=True)
    inbox.visible_to_teams.add(team)
    return inbox


@pytest.fixture
def dana(account):
    return UserFactory(account=account, email="dana@acme.example.com", full_name="Dana Scully")


@pytest.fixture
def as_member(client, member):
    client.force_login(member)
    return client


def _page(client, url, **params) -> str:
    response = client.get(url, params)
    assert response.status_code == 200, (url, response.status_code)
    return response.content.decode()


def _row_ids(html: str) -> list[str]:
    return re.findall(r'<li class="row[^"]*" data-id="([0-9a-f-]+)"', html)


# --- Mentions -----------------------------------------------------------------------------------


def test_mentioning_someone_who_cannot_see_the_inbox_refuses_the_note_and_says_why(
    as_member, member, other_member, vip, dana, account
):
    # Given a VIP conversation Cy (and admins) see, and Dana who is in no VIP team
    team = Team.objects.get(name="VIP desk")
    team.members.add(member)
    conversation = make_conversation(vip)
    # When Bo mentions Dana in a note
    response = as_member.post(
        f"/inbox/c/{conversation.pk}/notes/", {"text": "@dana have a look please"}
    )
    # Then the note is not saved and the page says who cannot see it and what to do
    assert response.status_code == 302
    assert Note.objects.count() == 0
    body = _page(as_member, f"/inbox/c/{conversation.pk}/")
    assert (
        "Dana can&#x27;t see this inbox. Share the inbox with their team first, or remove "
        "the mention." in body
    )
    assert not Notification.objects.filter(user=dana).exists()
    # And with htmx the error lands next to the note box
    response = as_member.post(
        f"/inbox/c/{conversation.pk}/notes/", {"text": "@dana ?"}, HTTP_HX_REQUEST="true"
    )
    assert response["HX-Retarget"] == "#note-error"
    assert "Dana can&#x27;t see this inbox" in response.content.decode()


def test_the_api_refuses_the_same_mention_with_a_400_invalid(
    member_api, member, other_member, vip, dana
):
    Team.objects.get(name="VIP desk").members.add(member)
    conversation = make_conversation(vip)
    response = member_api.post(
        f"/api/v1/conversations/{conversation.pk}/notes/", {"text": "cc @Dana"}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
    assert response.json()["detail"].startswith("Dana can't see this inbox.")
    assert "text" in response.json()["errors"]
    assert Note.objects.count() == 0
    # A mention of someone who sees it is accepted
    ok = member_api.post(
        f"/api/v1/conversations/{conversation.pk}/notes/",
        {"text": "@cy over to you"},
        format="json",
    )
    assert ok.status_code == 201
    assert ok.json()["mentions"] == [str(other_member.pk)]


def test_an_ambiguous_or_unknown_name_is_not_a_mention_and_not_highlighted(
    as_member, member, admin, account, support
):
    # Given two people called Ann and two called Kim: "@ann" and "@kim" are the local
    # parts of Ann Smith's and Kim Park's addresses (an address wins over a first
    # name), "@annie" names nobody
    UserFactory(account=account, email="a.jones@acme.example.com", full_name="Ann Jones")
    UserFactory(account=account, email="kim@acme.example.com", full_name="Kim Park")
    UserFactory(account=account, email="kim.b@acme.example.com", full_name="Kim Berg")
    conversation = make_conversation(support)
    note = note_create(
        actor=member, conversation=conversation, text="@ann and @kim and @annie, thoughts?"
    )
    # Then only they are mentioned and highlighted
    mentioned = {u.email for u in note.mentions.all()}
    assert mentioned == {"ann@acme.example.com", "kim@acme.example.com"}
    body = _page(as_member, f"/inbox/c/{conversation.pk}/")
    assert '<mark class="mention" title="Ann Smith">@ann</mark>' in body
    assert '<mark class="mention" title="Kim Park">@kim</mark>' in body
    assert "@annie" in body and 'title="Ann Jones"' not in body


def test_a_first_name_two_people_share_is_not_a_mention(as_member, member, account, support):
    UserFactory(account=account, email="lee.one@acme.example.com", full_name="Lee One")
    UserFactory(account=account, email="lee.two@acme.example.com", full_name="Lee Two")
    conversation = make_conversation(support)
    note = note_create(actor=member, conversation=conversation, text="@Lee can one of you help?")
    assert list(note.mentions.all()) == []
    assert note.mention_handles == {}
    body = _page(as_member, f"/inbox/c/{conversation.pk}/")
    assert "<mark" not in body.split('id="thread"')[1].split("</ol>")[0]
    assert not Notification.objects.filter(kind=Kind.MENTION).exists()


def test_the_mention_suggestions_are_the_people_who_see_the_inbox(
    client, member, admin, other_member, vip, dana
):
    Team.objects.get(name="VIP desk").members.add(member)
    conversation = make_conversation(vip)
    client.force_login(member)
    everyone = client.get(f"/inbox/c/{conversation.pk}/mentionable/").json()["results"]
    # Admins and VIP desk members, not Dana
    assert {p["email"] for p in everyone} == {
        "ann@acme.example.com",
        "bo@acme.example.com",
        "cy@acme.example.com",
    }
    found = client.get(f"/inbox/c/{conversation.pk}/mentionable/", {"q": "Yo"}).json()["results"]
    assert [(p["handle"], p["name"]) for p in found] == [("cy", "Cy Young")]
    assert client.get(f"/inbox/c/{conversation.pk}/mentionable/", {"q": "dan"}).json() == {
        "results": []
    }
    # Someone who cannot see the inbox gets 404
    client.force_login(dana)
    assert client.get(f"/inbox/c/{conversation.pk}/mentionable/").status_code == 404


def test_the_mentions_view_lists_conversations_where_i_was_mentioned_newest_first(
    as_member, member, admin, support
):
    older = make_conversation(support, subject="Older")
    newer = make_conversation(support, subject="Newer")
    make_conversation(support, subject="Not mentioned")
    note_create(actor=admin, conversation=older, text="@bo see this")
    note_create(actor=admin, conversation=newer, text="@Bo and this")
    conversation_set_status(actor=admin, conversation=older, status="closed")
    Conversation.objects.filter(pk=older.pk).update(
        last_message_at=timezone.now() - timedelta(days=2)
    )
    body = _page(as_member, "/inbox/", view="mentions")
    assert _row_ids(body) == [str(newer.pk), str(older.pk)]
    assert 'data-view="mentions"' in body
    # Ann was mentioned nowhere
    as_member.force_login(admin)
    assert _row_ids(_page(as_member, "/inbox/", view="mentions")) == []


# --- Replying, assigning, closing ---------------------------------------------------------------


def _reply(client, conversation, **data):
    return client.post(f"/inbox/c/{conversation.pk}/reply/", {"text": "On it.", **data})


def test_replying_to_an_unassigned_conversation_assigns_it_to_the_replier(
    as_member, member, support
):
    conversation = make_conversation(support)
    assert _reply(as_member, conversation).status_code == 302
    conversation.refresh_from_db()
    assert conversation.assignee == member
    event = ConversationEvent.objects.get(conversation=conversation, kind="assigned")
    assert (event.actor, event.assignee, event.detail["reason"]) == (member, member, "replied")
    # No notification for taking it oneself
    assert not Notification.objects.filter(kind=Kind.ASSIGNED).exists()


def test_replying_leaves_an_assignment_and_the_setting_off_leaves_it_unassigned(
    as_member, member, admin, support, admin_api
):
    taken = make_conversation(support)
    taken.assignee = admin
    taken.save()
    _reply(as_member, taken)
    taken.refresh_from_db()
    assert taken.assignee == admin
    # When the admin turns the setting off (API, as an extra field of the inbox)
    response = admin_api.patch(
        f"/api/v1/inboxes/{support.pk}/", {"assign_on_reply": False}, format="json"
    )
    assert response.status_code == 200 and response.json()["assign_on_reply"] is False
    loose = make_conversation(support)
    _reply(as_member, loose)
    loose.refresh_from_db()
    assert loose.assignee is None
    # And back on through the settings page
    as_member.force_login(admin)
    page = _page(as_member, f"/settings/inboxes/{support.pk}/agent-replies/")
    assert 'name="assign_on_reply"' in page
    as_member.post(f"/settings/inboxes/{support.pk}/assign-on-reply/", {"assign_on_reply": "1"})
    support.refresh_from_db()
    assert support.assign_on_reply is True


def test_a_member_cannot_change_assign_on_reply(as_member, support):
    response = as_member.post(f"/settings/inboxes/{support.pk}/assign-on-reply/", {})
    assert response.status_code in (302, 403)
    support.refresh_from_db()
    assert support.assign_on_reply is True


def test_closing_leads_to_the_next_conversation_of_the_list(as_member, member, support):
    first = make_conversation(support, subject="First")  # oldest
    second = make_conversation(support, subject="Second")
    third = make_conversation(support, subject="Third")  # newest, top of the list
    # Given Bo works the "All open" list from the top
    next_url = f"/inbox/c/{third.pk}/?view=open"
    response = as_member.post(
        f"/inbox/c/{third.pk}/status/", {"status": "closed", "next": next_url}
    )
    # Then closing the top one opens the one below it, in the same list
    assert response.status_code == 302
    assert response["Location"] == f"/inbox/c/{second.pk}/?view=open"
    # With htmx: the whole screen moves there
    response = as_member.post(
        f"/inbox/c/{second.pk}/status/",
        {"status": "closed", "next": f"/inbox/c/{second.pk}/?view=open"},
        HTTP_HX_REQUEST="true",
    )
    location = json.loads(response["HX-Location"])
    assert location["path"] == f"/inbox/c/{first.pk}/?view=open"
    assert location["target"] == "#inbox-app"
    # The last one leads back to the (now empty) list
    response = as_member.post(
        f"/inbox/c/{first.pk}/status/",
        {"status": "closed", "next": f"/inbox/c/{first.pk}/?view=open"},
    )
    assert response["Location"] == "/inbox/?view=open"
    assert Conversation.objects.filter(status="closed").count() == 3


def test_closing_the_bottom_conversation_leads_to_the_top_one(as_member, support):
    bottom = make_conversation(support, subject="Bottom")
    top = make_conversation(support, subject="Top")
    response = as_member.post(
        f"/inbox/c/{bottom.pk}/status/",
        {"status": "closed", "next": f"/inbox/c/{bottom.pk}/?view=open"},
    )
    assert response["Location"] == f"/inbox/c/{top.pk}/?view=open"


# --- Saved replies ------------------------------------------------------------------------------


def test_saved_replies_fill_in_their_variables(client, admin, member, support):
    client.force_login(admin)
    response = client.post(
        f"/settings/inboxes/{support.pk}/saved-replies/",
        {
            "name": "Refund",
            "body": "Hi {{customer.first_name}},\n\nThe refund is on its way.\n\n"
            "{{ agent.first_name }}, {{inbox.name}}",
        },
    )
    assert response.status_code == 302
    saved = SavedReply.objects.get()
    conversation = make_conversation(support, sender_name="Carol Danvers")
    client.force_login(member)
    page = _page(client, f"/inbox/c/{conversation.pk}/")
    assert f'<option value="{saved.pk}">Refund</option>' in page
    got = client.get(f"/inbox/c/{conversation.pk}/saved-replies/{saved.pk}/").json()
    assert got == {
        "name": "Refund",
        "text": "Hi Carol,\n\nThe refund is on its way.\n\nBo, Support",
    }
    # Without JavaScript: the link puts it in the reply box
    page = _page(client, f"/inbox/c/{conversation.pk}/", saved_reply=str(saved.pk))
    assert "Hi Carol,\n\nThe refund is on its way.\n\nBo, Support</textarea>" in page


def test_a_saved_reply_with_an_unknown_variable_is_refused_and_members_cannot_add_one(
    client, admin, member, support
):
    client.force_login(admin)
    response = client.post(
        f"/settings/inboxes/{support.pk}/saved-replies/",
        {"name": "Bad", "body": "Hi {{customer.nickname}}"},
    )
    assert response.status_code == 400
    assert "Unknown variable {{customer.nickname}}" in response.content.decode()
    assert "{{customer.first_name}}" in response.content.decode()
    client.force_login(member)
    client.post(f"/settings/inboxes/{support.pk}/saved-replies/", {"name": "X", "body": "Y"})
    assert SavedReply.objects.count() == 0


def test_an_admin_deletes_a_saved_reply(client, admin, support):
    saved = SavedReply.objects.create(inbox=support, name="Old", body="Hello")
    client.force_login(admin)
    client.post(f"/settings/inboxes/{support.pk}/saved-replies/{saved.pk}/", {"delete": "1"})
    assert SavedReply.objects.count() == 0


# --- Snooze -------------------------------------------------------------------------------------


def test_a_snoozed_conversation_leaves_the_open_list_and_comes_back_at_its_time(
    as_member, member, support
):
    conversation = make_conversation(support)
    now = timezone.now()
    until = now + timedelta(hours=3)
    conversation_snooze(actor=member, conversation=conversation, until=until, now=now)
    # It is out of the open lists, in Snoozed, and says until when
    assert _row_ids(_page(as_member, "/inbox/", view="open")) == []
    assert _row_ids(_page(as_member, "/inbox/")) == []
    snoozed = _page(as_member, "/inbox/", view="snoozed")
    assert _row_ids(snoozed) == [str(conversation.pk)]
    assert "Snoozed until" in snoozed
    assert 'id="snoozed-until"' in _page(as_member, f"/inbox/c/{conversation.pk}/")
    # Nothing wakes before its time
    assert conversations_wake(now=until - timedelta(seconds=1)) == 0
    assert _row_ids(_page(as_member, "/inbox/", view="open")) == []
    # At its time it is open in the lists again, with a line in the thread
    assert conversations_wake(now=until) == 1
    conversation.refresh_from_db()
    assert conversation.snoozed_until is None and conversation.status == "open"
    assert _row_ids(_page(as_member, "/inbox/", view="open")) == [str(conversation.pk)]
    assert "Back in the open list: the snooze ended" in _page(
        as_member, f"/inbox/c/{conversation.pk}/"
    )
    assert conversations_wake(now=until + timedelta(minutes=1)) == 0


def test_the_customer_writing_again_wakes_a_snoozed_conversation(as_member, member, support):
    conversation = make_conversation(support)
    first = conversation.messages.get()
    now = timezone.now()
    conversation_snooze(
        actor=member, conversation=conversation, until=now + timedelta(days=2), now=now
    )
    answer = make_message(
        support,
        subject=f"Re: {first.subject}",
        in_reply_to=first.message_id,
        references=[first.message_id],
    )
    thread_into_inbox(support, [answer], backfill=False)
    conversation.refresh_from_db()
    assert conversation.snoozed_until is None and conversation.message_count == 2
    assert _row_ids(_page(as_member, "/inbox/", view="open")) == [str(conversation.pk)]
    assert "Back in the open list: the customer wrote again" in _page(
        as_member, f"/inbox/c/{conversation.pk}/"
    )


def test_snooze_refuses_the_past_and_a_closed_conversation(member, support):
    conversation = make_conversation(support)
    now = timezone.now()
    with pytest.raises(Invalid, match="in the future"):
        conversation_snooze(
            actor=member, conversation=conversation, until=now - timedelta(minutes=1), now=now
        )
    conversation_set_status(actor=member, conversation=conversation, status="closed")
    with pytest.raises(Invalid, match="reopen it first"):
        conversation_snooze(
            actor=member, conversation=conversation, until=now + timedelta(hours=1), now=now
        )
    assert Conversation.objects.get(pk=conversation.pk).snoozed_until is None


def test_snoozing_from_the_page_with_a_preset_and_waking_by_hand(as_member, member, support):
    conversation = make_conversation(support)
    before = timezone.now()
    as_member.post(f"/inbox/c/{conversation.pk}/snooze/", {"preset": "tomorrow"})
    after = timezone.now()
    conversation.refresh_from_db()
    local = timezone.localtime(conversation.snoozed_until)
    assert (local.hour, local.minute) == (9, 0)
    assert timezone.localdate(before) < local.date() <= timezone.localdate(after) + timedelta(1)
    response = as_member.post(f"/inbox/c/{conversation.pk}/snooze/", {"until": "2001-01-01T09:00"})
    assert response.status_code == 302  # refused: in the past; the snooze stays
    conversation.refresh_from_db()
    assert conversation.snoozed_until is not None
    as_member.post(f"/inbox/c/{conversation.pk}/snooze/", {"action": "wake"})
    conversation.refresh_from_db()
    assert conversation.snoozed_until is None


# --- The composer: Cc, Bcc, formatting ----------------------------------------------------------


def test_cc_and_bcc_reach_the_outbox_recipients_and_bcc_is_in_no_header(as_member, member, support):
    conversation = make_conversation(support)
    response = _reply(
        as_member,
        conversation,
        cc="dave@partner.example.com, Erin@Partner.example.com",
        bcc="audit@acme-archive.example.com",
    )
    assert response.status_code == 302
    item = OutboxItem.objects.get()
    assert item.recipients == [
        "carol@customer.example.com",
        "dave@partner.example.com",
        "Erin@Partner.example.com",
        "audit@acme-archive.example.com",
    ]
    raw = item.message.raw.read()
    sent = email.message_from_bytes(raw, policy=policy.default)
    assert sent["Cc"] == "dave@partner.example.com, Erin@Partner.example.com"
    assert sent["Bcc"] is None
    assert b"acme-archive" not in raw


def test_a_bad_cc_address_refuses_the_reply_and_queues_nothing(as_member, support):
    conversation = make_conversation(support)
    response = as_member.post(
        f"/inbox/c/{conversation.pk}/reply/",
        {"text": "Hi", "cc": "not an address"},
        HTTP_HX_REQUEST="true",
    )
    assert response["HX-Retarget"] == "#reply-error"
    assert "Cc:" in response.content.decode()
    assert OutboxItem.objects.count() == 0


def test_formatting_is_sanitised_html_with_a_text_part(member, support):
    conversation = make_conversation(support)
    message = conversation_reply(
        actor=member,
        conversation=conversation,
        text="",
        html=(
            '<div><b>Bold</b> and <i>italic</i> <a href="https://acme.example.com/help" '
            'onclick="x()">help</a></div><ul><li>one</li><li>two</li></ul>'
            '<script>alert(1)</script><img src="https://evil.example.com/t.gif">'
            '<a href="javascript:alert(1)">bad</a>'
        ),
    )
    assert "<b>Bold</b>" in message.html and "<i>italic</i>" in message.html
    assert '<a href="https://acme.example.com/help" rel="noopener noreferrer">help</a>' in (
        message.html
    )
    assert "<ul><li>one</li><li>two</li></ul>" in message.html
    for gone in ("script", "onclick", "<img", "javascript:"):
        assert gone not in message.html
    assert "Bold and italic help (https://acme.example.com/help)" in message.text
    assert "one" in message.text and "two" in message.text
    raw = message.raw.read()
    assert b"multipart/alternative" in raw


# --- Attachments --------------------------------------------------------------------------------


def test_attachments_over_the_limit_are_refused_before_anything_is_queued(member, support):
    conversation = make_conversation(support)
    big = Attachment(filename="video.mp4", content_type="video/mp4", data=b"\0" * (27 * MB))
    with pytest.raises(Invalid) as refused:
        conversation_reply(
            actor=member, conversation=conversation, text="See attached", attachments=[big]
        )
    assert refused.value.detail == (
        "The attachments are 27 MB; the limit is 20 MB. Remove some or share a link instead."
    )
    assert OutboxItem.objects.count() == 0
    assert Conversation.objects.get(pk=conversation.pk).message_count == 1


def test_the_composer_says_the_attachments_are_too_large(as_member, support, settings):
    settings.ATTACHMENT_MAX_BYTES = 2 * MB
    conversation = make_conversation(support)
    files = [
        SimpleUploadedFile("a.bin", b"a" * (2 * MB), "application/octet-stream"),
        SimpleUploadedFile("b.bin", b"b" * (MB // 2), "application/octet-stream"),
    ]
    response = as_member.post(
        f"/inbox/c/{conversation.pk}/reply/",
        {"text": "Two files", "attachments": files},
        HTTP_HX_REQUEST="true",
    )
    assert response["HX-Retarget"] == "#reply-error"
    assert (
        "The attachments are 2.5 MB; the limit is 2 MB. Remove some or share a link instead."
        in response.content.decode()
    )
    assert OutboxItem.objects.count() == 0
    # Within the limit they go with the reply
    ok = as_member.post(
        f"/inbox/c/{conversation.pk}/reply/",
        {"text": "One file", "attachments": [SimpleUploadedFile("c.txt", b"hello", "text/plain")]},
    )
    assert ok.status_code == 302
    item = OutboxItem.objects.get()
    assert [(a.filename, a.content_type) for a in item.message.attachments.all()] == [
        ("c.txt", "text/plain")
    ]


def test_the_api_reply_takes_cc_and_bcc(member_api, member, support):
    conversation = make_conversation(support)
    response = member_api.post(
        f"/api/v1/conversations/{conversation.pk}/replies/",
        {
            "text": "Copying finance.",
            "cc": ["fin@acme-finance.example.com"],
            "bcc": ["x@y.example"],
        },
        format="json",
    )
    assert response.status_code == 201
    assert [c["address"] for c in response.json()["cc"]] == ["fin@acme-finance.example.com"]
    assert OutboxItem.objects.get().recipients[-1] == "x@y.example"
    bad = member_api.post(
        f"/api/v1/conversations/{conversation.pk}/replies/",
        {"text": "Hi", "bcc": ["nope"]},
        format="json",
    )
    assert bad.status_code == 400 and bad.json()["code"] == "invalid"
    assert "bcc" in bad.json()["errors"]


def test_every_page_links_the_favicon(as_member, support):
    from django.contrib.staticfiles import finders

    assert 'rel="icon" href="/static/favicon.svg"' in _page(as_member, "/inbox/")
    assert finders.find("favicon.svg")


def test_the_api_snoozes_and_wakes_a_conversation(member_api, support):
    conversation = make_conversation(support)
    until = timezone.now() + timedelta(days=1)
    url = f"/api/v1/conversations/{conversation.pk}/"
    response = member_api.patch(url, {"snoozed_until": until.isoformat()}, format="json")
    assert response.status_code == 200
    assert response.json()["snoozed_until"] is not None
    listed = member_api.get("/api/v1/conversations/").json()["results"]
    assert listed[0]["snoozed_until"] is not None
    past = member_api.patch(url, {"snoozed_until": "2001-01-01T09:00:00Z"}, format="json")
    assert past.status_code == 400 and past.json()["code"] == "invalid"
    woken = member_api.patch(url, {"snoozed_until": None}, format="json")
    assert woken.status_code == 200 and woken.json()["snoozed_until"] is None
