"""The inbox screen (/inbox/) through Django's test client: views, filters, search,
unread, visibility across inboxes and accounts, actions and their errors, CSRF,
attachment downloads, hostile email HTML, and a fixed number of queries per list.

The browser tests (tests/browser/test_browser_inbox.py) drive the same screen in Chromium.
"""

from __future__ import annotations

import html
import re
from datetime import timedelta
from html.parser import HTMLParser

import pytest
from django.core.files.base import ContentFile
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from accounts.models import Team
from conversations.email_frame import frame_token
from conversations.handling import conversation_assign, conversation_set_status, note_create
from conversations.models import Conversation, ConversationEvent, Note, ReadState
from conversations.services import routing_rule_set
from conversations.threading import thread_into_inbox
from inboxes.models import Attachment, Inbox, Mailbox, Message, OutboxItem
from tests.support.conversations_factory import make_conversation, make_message

pytestmark = pytest.mark.django_db

SUPPORT = "support@acme.example.com"


@pytest.fixture
def support(account):
    mailbox = Mailbox.objects.create(
        account=account,
        kind="team",
        address=SUPPORT,
        canonical_address=SUPPORT,
        imap_host="imap.acme.example.com",
    )
    return Inbox.objects.create(
        account=account, name="Support", mailbox=mailbox, from_name="Acme Support"
    )


@pytest.fixture
def sales(account):
    return Inbox.objects.create(account=account, name="Sales")


@pytest.fixture
def vip(account, other_member):
    """A restricted inbox only the VIP team (Cy) and admins see."""
    team = Team.objects.create(account=account, name="VIP desk")
    team.members.add(other_member)
    inbox = Inbox.objects.create(account=account, name="VIP", restricted=True)
    inbox.visible_to_teams.add(team)
    return inbox


@pytest.fixture
def as_member(client, member):
    client.force_login(member)
    return client


@pytest.fixture
def as_admin(client, admin):
    client.force_login(admin)
    return client


def page(client, url, **params) -> str:
    response = client.get(url, params)
    assert response.status_code == 200, (url, response.status_code)
    return response.content.decode()


def row_ids(page_html: str) -> list[str]:
    return re.findall(r'<li class="row[^"]*" data-id="([0-9a-f-]+)"', page_html)


def nav_count(page_html: str, key: str) -> int:
    match = re.search(
        rf'data-view="{key}">\s*<span class="nav-name">[^<]*</span><span class="count">(\d+)<',
        page_html,
    )
    assert match, key
    return int(match.group(1))


class Attrs(HTMLParser):
    """Every tag's attributes, as the browser would read them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def tags(page_html: str, name: str) -> list[dict]:
    parser = Attrs()
    parser.feed(page_html)
    return [attrs for tag, attrs in parser.tags if tag == name]


# --- Logging in and the page ----------------------------------------------------------------------


def test_every_inbox_url_needs_a_login(client, support):
    conversation = make_conversation(support)
    for url in [
        "/inbox/",
        "/inbox/list/",
        f"/inbox/c/{conversation.pk}/",
        f"/inbox/c/{conversation.pk}/thread/",
    ]:
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/login/"), url
    for action in ["reply", "notes", "assign", "status"]:
        response = client.post(f"/inbox/c/{conversation.pk}/{action}/", {"text": "x"})
        assert response.status_code == 302 and response["Location"].startswith("/login/")
    assert client.post("/inbox/availability/").status_code == 302


def test_the_page_has_the_three_panes_the_nav_link_and_a_strict_csp(as_member, support):
    response = as_member.get("/inbox/")
    body = response.content.decode()
    assert 'id="inbox-nav"' in body and 'id="conv-list"' in body
    assert 'id="conversation-pane"' in body
    assert '<a href="/inbox/" class="active" aria-current="page">Inbox</a>' in body
    assert "Available for new conversations" in body
    policy = response["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "img-src 'self' data:" in policy
    assert "http:" not in policy
    # No inline script or style in what we render.
    assert not re.search(r"<script(?![^>]*\bsrc=)", body)
    assert " style=" not in body and "<style" not in body


# --- Views, filters, search, unread ---------------------------------------------------------------


def test_views_and_inboxes_filter_the_list_and_show_counts(
    as_member, member, other_member, support, sales
):
    unassigned = make_conversation(support, subject="Printer on fire")
    mine = make_conversation(support, subject="My refund")
    theirs = make_conversation(sales, subject="Quote for Cy")
    closed = make_conversation(sales, subject="Old invoice")
    Conversation.objects.filter(pk=mine.pk).update(assignee=member)
    Conversation.objects.filter(pk=theirs.pk).update(assignee=other_member)
    Conversation.objects.filter(pk=closed.pk).update(status="closed")

    home = page(as_member, "/inbox/")
    assert row_ids(home) == [str(unassigned.pk)]  # Unassigned is the default view
    assert nav_count(home, "unassigned") == 1
    assert nav_count(home, "mine") == 1
    assert nav_count(home, "open") == 3
    # Closed shows no number: counting the closed majority on every poll cost too much.
    assert re.search(r'data-view="closed">\s*<span class="nav-name">Closed</span></a>', home)
    assert row_ids(page(as_member, "/inbox/", view="mine")) == [str(mine.pk)]
    assert set(row_ids(page(as_member, "/inbox/", view="open"))) == {
        str(unassigned.pk),
        str(mine.pk),
        str(theirs.pk),
    }
    assert row_ids(page(as_member, "/inbox/", view="closed")) == [str(closed.pk)]
    # An inbox entry: its open conversations, with the inbox's open count in the nav.
    assert row_ids(page(as_member, "/inbox/", inbox=str(sales.pk))) == [str(theirs.pk)]
    assert set(row_ids(page(as_member, "/inbox/", inbox=str(support.pk)))) == {
        str(unassigned.pk),
        str(mine.pk),
    }
    assert row_ids(page(as_member, "/inbox/", inbox=str(sales.pk), view="closed")) == [
        str(closed.pk)
    ]
    # The list shows subject, customer, inbox, assignee and the message count.
    listing = page(as_member, "/inbox/", view="open")
    assert "Quote for Cy" in listing and "Cy Young" in listing and "Sales" in listing
    assert "Carol" in listing and 'class="msg-count"' in listing
    # An unknown view falls back to the default one; a malformed inbox id is a 404.
    assert row_ids(page(as_member, "/inbox/", view="nonsense")) == [str(unassigned.pk)]
    assert as_member.get("/inbox/", {"inbox": "not-a-uuid"}).status_code == 404


def test_search_finds_subject_participants_and_body_across_statuses(as_member, support):
    printer = make_conversation(
        support, subject="Printer on fire", sender="dan@customer.example.com"
    )
    invoice = make_conversation(support, subject="Invoice", text="the amount is wrong")
    other = make_conversation(support, subject="Greetings")
    Conversation.objects.filter(pk=invoice.pk).update(status="closed")

    assert row_ids(page(as_member, "/inbox/", q="printer")) == [str(printer.pk)]
    assert row_ids(page(as_member, "/inbox/", q="dan@customer")) == [str(printer.pk)]
    assert row_ids(page(as_member, "/inbox/", q="AMOUNT is wrong")) == [str(invoice.pk)]
    assert row_ids(page(as_member, "/inbox/", q="nothing like this")) == []
    assert "No conversation matches" in page(as_member, "/inbox/", q="nothing like this")
    # The search box's htmx request gets only the list, and the address bar follows.
    response = as_member.get("/inbox/list/", {"q": "greetings"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert row_ids(response.content.decode()) == [str(other.pk)]
    assert response["HX-Replace-Url"] == "/inbox/?q=greetings"
    assert "<html" not in response.content.decode()


def test_a_conversation_is_unread_until_opened_and_again_when_mail_arrives(
    as_member, member, support
):
    conversation = make_conversation(support, subject="Where is my parcel")
    listing = page(as_member, "/inbox/")
    assert f'class="row unread" data-id="{conversation.pk}"' in listing

    opened = page(as_member, f"/inbox/c/{conversation.pk}/")
    assert "Where is my parcel" in opened
    assert ReadState.objects.filter(user=member, conversation=conversation).exists()
    assert f'class="row" data-id="{conversation.pk}"' in page(as_member, "/inbox/")

    answer = make_message(support, subject="Re: Where is my parcel", minutes_ago=-1)
    answer.in_reply_to = conversation.messages.get().message_id
    answer.save()
    thread_into_inbox(support, [answer], backfill=False)
    assert f'class="row unread" data-id="{conversation.pk}"' in page(as_member, "/inbox/")


def test_the_list_poll_answers_204_until_something_changes(as_member, support):
    make_conversation(support, subject="First")
    first = as_member.get("/inbox/list/", HTTP_HX_REQUEST="true")
    version = re.search(r'data-version="([0-9a-f]+)"', first.content.decode()).group(1)
    # The nav's counts come along out of band.
    assert 'id="inbox-nav" hx-swap-oob="true"' in first.content.decode()
    assert as_member.get("/inbox/list/", {"v": version}).status_code == 204

    make_conversation(support, subject="Second")
    changed = as_member.get("/inbox/list/", {"v": version})
    assert changed.status_code == 200
    assert "Second" in changed.content.decode()
    assert "HX-Replace-Url" not in changed  # a poll leaves the address bar alone


def test_the_list_poll_sees_changes_the_rows_do_not_render_differently_for_everyone(
    as_member, member, support
):
    """The poll's version is taken from the data (not from rendered HTML): an
    assignment, a read and a renamed inbox all count as changes."""
    conversation = make_conversation(support, subject="First")

    def version() -> str:
        body = as_member.get("/inbox/list/", {"view": "open"}, HTTP_HX_REQUEST="true")
        return re.search(r'data-version="([0-9a-f]+)"', body.content.decode()).group(1)

    def poll(v):
        return as_member.get("/inbox/list/", {"view": "open", "v": v}, HTTP_HX_REQUEST="true")

    before = version()
    assert poll(before).status_code == 204
    conversation_assign(actor=member, conversation=conversation, assignee=member)
    assert poll(before).status_code == 200
    assigned = version()
    as_member.get(f"/inbox/c/{conversation.pk}/")  # read
    assert poll(assigned).status_code == 200
    read = version()
    Inbox.objects.filter(pk=support.pk).update(name="Help desk")
    renamed = poll(read)
    assert renamed.status_code == 200 and "Help desk" in renamed.content.decode()


def more_link(body: str) -> tuple[str, str] | None:
    """The "Show more" link's href (no JavaScript) and hx-get (htmx appends)."""
    match = re.search(r'<p class="more"><a href="([^"]+)" hx-get="([^"]+)"', body)
    return (html.unescape(match.group(1)), html.unescape(match.group(2))) if match else None


@pytest.fixture
def small_pages(monkeypatch):
    from conversations import inbox_views

    monkeypatch.setattr(inbox_views, "PAGE_SIZE", 4)


def test_show_more_appends_the_next_page_only_whatever_its_depth(as_member, support, small_pages):
    conversations = [make_conversation(support) for _ in range(11)]
    # Ties on last_message_at are settled by id: no row is lost or shown twice.
    Conversation.objects.filter(pk__in=[c.pk for c in conversations[3:7]]).update(
        last_message_at=conversations[5].last_message_at
    )
    expected = [
        str(pk)
        for pk in Conversation.objects.order_by("-last_message_at", "-id").values_list(
            "pk", flat=True
        )
    ]
    first = page(as_member, "/inbox/", view="open")
    seen = row_ids(first)
    assert seen == expected[:4]
    href, url = more_link(first)
    counts = []
    while url:
        with CaptureQueriesContext(connection) as captured:
            response = as_member.get(url, HTTP_HX_REQUEST="true")
        counts.append(len(captured))
        body = response.content.decode()
        after = re.search(r"after=([^&]+)", url).group(1)
        # Only the next page: no list head, no nav; the first page's poll takes its
        # boundary from the first appended page.
        assert body.startswith(
            f'<div class="page"><input type="hidden" name="upto" value="{after}">'
        )
        assert "list-head" not in body and "inbox-nav" not in body
        assert "HX-Replace-Url" not in response
        assert 'id="list-foot" class="list-foot" hx-swap-oob="true"' in body
        seen += row_ids(body)
        url = (more_link(body) or (None, None))[1]
    assert seen == expected
    assert counts == [counts[0]] * len(counts) and counts[0] <= 4, counts
    # Without JavaScript "Show more" is the next page as a whole page.
    assert row_ids(page(as_member, href)) == expected[4:8]


def test_the_first_page_poll_keeps_every_row_above_the_appended_pages(
    as_member, support, small_pages
):
    old = [make_conversation(support, subject=f"Old {n}") for n in range(9)]
    newest_first = [str(c.pk) for c in reversed(old)]
    first = as_member.get("/inbox/list/", {"view": "open"}, HTTP_HX_REQUEST="true")
    body = first.content.decode()
    version = re.search(r'data-version="([0-9a-f]+)"', body).group(1)
    _, url = more_link(body)
    boundary = re.search(r"after=([^&]+)", url).group(1)
    assert 'hx-include="#list-more"' in body

    def poll(**extra):
        params = {"view": "open", "v": version, **extra}
        with CaptureQueriesContext(connection) as captured:
            response = as_member.get("/inbox/list/", params, HTTP_HX_REQUEST="true")
        return response, len(captured)

    # htmx sends the start of every appended page, in order: the first one counts.
    unchanged, unchanged_queries = poll(upto=[boundary, "1.0"])
    assert unchanged.status_code == 204

    make_conversation(support, subject="Brand new")
    # Pages appended below: every row down to the boundary, none pushed out of view.
    kept, kept_queries = poll(upto=[boundary, "1.0"])
    assert kept.status_code == 200
    kept_body = kept.content.decode()
    assert row_ids(kept_body)[1:] == newest_first[:4] and "Brand new" in kept_body
    assert "list-foot" not in kept_body  # the appended pages carry "Show more"
    assert kept_queries == unchanged_queries
    # No page appended: the first page, and the "Show more" after it, out of band.
    alone, _ = poll()
    alone_body = alone.content.decode()
    assert row_ids(alone_body)[1:] == newest_first[:3]
    assert 'id="list-foot" class="list-foot" hx-swap-oob="true"' in alone_body
    assert f"after={boundary}" not in more_link(alone_body)[1]


def test_the_list_runs_a_fixed_number_of_queries_whatever_its_length(
    as_member, member, other_member, support, sales
):
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert as_member.get("/inbox/", {"view": "open"}).status_code == 200
        return len(captured)

    for i in range(3):
        make_conversation(support if i % 2 else sales, messages=2)
    few = queries()
    for i in range(15):
        conversation = make_conversation(support if i % 2 else sales, messages=2)
        Conversation.objects.filter(pk=conversation.pk).update(
            assignee=member if i % 3 else other_member
        )
    many = queries()
    assert many == few, f"{few} queries for 3 rows, {many} for 18"

    with CaptureQueriesContext(connection) as captured:
        assert as_member.get("/inbox/list/", {"view": "open"}).status_code == 200
    assert len(captured) <= few


def test_a_long_thread_renders_in_a_fixed_number_of_queries(as_admin, admin, member, support):
    def queries(conversation) -> int:
        with CaptureQueriesContext(connection) as captured:
            assert as_admin.get(f"/inbox/c/{conversation.pk}/").status_code == 200
        return len(captured)

    short = make_conversation(support, messages=1, html="<p>Hi</p>")
    note_create(actor=admin, conversation=short, text="@bo look")
    long = make_conversation(support, messages=8, html="<p>Hi</p>")
    for _ in range(4):
        note_create(actor=admin, conversation=long, text="@bo look")
    conversation_assign(actor=admin, conversation=long, assignee=member)
    conversation_assign(actor=admin, conversation=long, assignee=None)
    assert queries(long) == queries(short)

    def pane_and_poll(conversation) -> tuple[int, int]:
        with CaptureQueriesContext(connection) as pane:
            response = as_admin.get(
                f"/inbox/c/{conversation.pk}/",
                HTTP_HX_REQUEST="true",
                HTTP_HX_TARGET="conversation-pane",
            )
            assert response.status_code == 200
        with CaptureQueriesContext(connection) as poll:
            response = as_admin.get(f"/inbox/c/{conversation.pk}/thread/", HTTP_HX_REQUEST="true")
            assert response.status_code == 200
        return len(pane), len(poll)

    assert pane_and_poll(long) == pane_and_poll(short)


# --- Visibility -------------------------------------------------------------------------------------


def test_restricted_inboxes_and_other_accounts_are_404_everywhere(
    client, member, other_member, outsider, support, vip
):
    hidden = make_conversation(vip, subject="VIP secret")
    message = hidden.messages.get()
    attachment = Attachment.objects.create(
        message=message,
        filename="secret.pdf",
        content_type="application/pdf",
        size=3,
        file=ContentFile(b"pdf", name="secret.pdf"),
    )
    urls = [
        f"/inbox/c/{hidden.pk}/",
        f"/inbox/c/{hidden.pk}/thread/",
        f"/inbox/attachments/{attachment.pk}/",
        f"/inbox/messages/{message.pk}/frame.css",
    ]
    for person in (member, outsider):
        client.force_login(person)
        home = page(client, "/inbox/", view="open")
        assert "VIP secret" not in home and ">VIP<" not in home
        assert client.get("/inbox/", {"inbox": str(vip.pk)}).status_code == 404
        assert client.get("/inbox/list/", {"inbox": str(vip.pk)}).status_code == 404
        assert row_ids(page(client, "/inbox/", q="VIP secret")) == []
        for url in urls:
            assert client.get(url).status_code == 404, (person, url)
        for action, data in [
            ("reply", {"text": "hi"}),
            ("notes", {"text": "hi"}),
            ("assign", {"assignee": "me"}),
            ("status", {"status": "closed"}),
        ]:
            assert client.post(f"/inbox/c/{hidden.pk}/{action}/", data).status_code == 404
    hidden.refresh_from_db()
    assert (hidden.status, hidden.assignee) == ("open", None)
    assert not Note.objects.exists()
    # A frame token made for someone who cannot see the message opens nothing either.
    client.logout()
    token = frame_token("css", message.pk, member.pk)
    assert client.get(urls[3], {"t": token}).status_code == 404

    # Cy is in the VIP team: he sees it, and so would an admin.
    client.force_login(other_member)
    assert "VIP secret" in page(client, "/inbox/", view="open")
    assert client.get(f"/inbox/c/{hidden.pk}/").status_code == 200
    assert client.get(f"/inbox/attachments/{attachment.pk}/").status_code == 200
    # The conversation of another account is a 404 for its admin's session too.
    client.force_login(outsider)
    assert client.get(f"/inbox/c/{hidden.pk}/").status_code == 404


# --- Attachments ------------------------------------------------------------------------------------


def test_attachments_download_with_safe_headers(as_member, client, member, support):
    conversation = make_conversation(support, html='<p>Logo: <img src="cid:logo@acme"></p>')
    message = conversation.messages.get()
    png = Attachment.objects.create(
        message=message,
        filename="logo.png",
        content_type="image/png",
        size=4,
        content_id="logo@acme",
        inline=True,
        file=ContentFile(b"\x89PNG", name="logo.png"),
    )
    page_html_file = Attachment.objects.create(
        message=message,
        filename="invoice.html",
        content_type="text/html",
        size=30,
        file=ContentFile(b"<script>alert(1)</script>", name="invoice.html"),
    )
    svg = Attachment.objects.create(
        message=message,
        filename="drawing.svg",
        content_type="image/svg+xml",
        size=10,
        file=ContentFile(b"<svg onload=alert(1)></svg>", name="drawing.svg"),
    )

    response = as_member.get(f"/inbox/attachments/{page_html_file.pk}/")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/octet-stream"
    assert response["Content-Disposition"].startswith("attachment;")
    assert 'filename="invoice.html"' in response["Content-Disposition"]
    assert response["X-Content-Type-Options"] == "nosniff"
    assert b"".join(response.streaming_content) == b"<script>alert(1)</script>"
    assert as_member.get(f"/inbox/attachments/{svg.pk}/")["Content-Type"] == (
        "application/octet-stream"
    )
    image = as_member.get(f"/inbox/attachments/{png.pk}/")
    assert image["Content-Type"] == "image/png"
    assert image["Content-Disposition"].startswith("attachment;")

    # The thread lists the downloads; the inline image is shown in the email instead.
    thread = page(as_member, f"/inbox/c/{conversation.pk}/")
    assert f'href="/inbox/attachments/{page_html_file.pk}/"' in thread
    assert f'href="/inbox/attachments/{png.pk}/"' not in thread
    srcdoc = html.unescape(tags(thread, "iframe")[0]["srcdoc"])
    cid_url = re.search(rf'src="(/inbox/attachments/{png.pk}/\?t=[^"]+)"', srcdoc).group(1)

    # The frame has no session cookie: the signed URL is what opens the image.
    anonymous = Client()
    assert anonymous.get(f"/inbox/attachments/{png.pk}/").status_code == 302
    assert anonymous.get(html.unescape(cid_url)).status_code == 200
    forged = html.unescape(cid_url)[:-4] + "AAAA"
    assert anonymous.get(forged).status_code == 404
    # A token names one file: it does not open another.
    token = html.unescape(cid_url).split("t=")[1]
    assert (
        anonymous.get(f"/inbox/attachments/{page_html_file.pk}/", {"t": token}).status_code == 404
    )


# --- Hostile email HTML -----------------------------------------------------------------------------

PAYLOAD = (
    '<p>Hi</p><script>window.top.__pwned = true; alert("script")</script>'
    '<img src="x" onerror="window.top.__pwned = true; alert(\'img\')">'
    '<a href="javascript:window.top.__pwned=true">click me</a>'
    '<p style="color: red; background: url(https://evil.example.com/t.gif)">styled</p>'
    '"><svg onload=alert(1)>'
)


def test_hostile_html_stays_escaped_inside_the_sandboxed_frame(as_member, support):
    # Stored as-is, as if ingestion had let it through: the page must hold it anyway.
    conversation = make_conversation(support, subject="Payload", html=PAYLOAD, text="Hi")
    response = as_member.get(f"/inbox/c/{conversation.pk}/")
    body = response.content.decode()

    frames = tags(body, "iframe")
    assert len(frames) == 1
    sandbox = frames[0]["sandbox"].split()
    assert "allow-scripts" not in sandbox and "allow-same-origin" not in sandbox
    # The payload never reaches the page as markup: only escaped, inside srcdoc.
    for raw in ["<script>window", "onerror=", 'href="javascript:', "<svg onload", "evil.example"]:
        assert raw not in body, raw
    assert "&lt;p&gt;Hi&lt;/p&gt;" in body  # the email is there, escaped
    assert len(tags(body, "script")) == len(re.findall(r"<script src=", body))
    # Inside the frame's document too: sanitised again, styles moved to a stylesheet.
    srcdoc = frames[0]["srcdoc"]
    assert "<script" not in srcdoc and "onerror" not in srcdoc
    assert "javascript:" not in srcdoc and "evil.example" not in srcdoc
    assert 'data-pk-style="1"' in srcdoc and not re.search(r"\sstyle=", srcdoc)
    assert "default-src 'none'" in html.unescape(
        srcdoc
    )  # the frame's own CSP, on top of the page's
    css_url = re.search(r'<link rel="stylesheet" href="([^"]+)"', srcdoc).group(1)
    css = Client().get(html.unescape(css_url))
    assert css.status_code == 200 and css["Content-Type"].startswith("text/css")
    assert '[data-pk-style="1"]{color:red}' in css.content.decode()


def test_remote_images_load_only_after_show_images(as_member, support):
    conversation = make_conversation(
        support,
        html='<p>Look</p><img src="https://images.example.com/pixel.png" alt="pixel">',
        text="Look",
    )
    Message.objects.filter(conversationmessage__conversation=conversation).update(
        has_remote_images=True
    )
    blocked = as_member.get(f"/inbox/c/{conversation.pk}/")
    srcdoc = tags(blocked.content.decode(), "iframe")[0]["srcdoc"]
    assert "images.example.com" not in srcdoc
    assert "Show images" in blocked.content.decode()
    assert "https:" not in blocked["Content-Security-Policy"]

    shown = as_member.get(f"/inbox/c/{conversation.pk}/", {"images": "1"})
    srcdoc = tags(shown.content.decode(), "iframe")[0]["srcdoc"]
    assert 'src="https://images.example.com/pixel.png"' in srcdoc
    assert "img-src 'self' data: https: http:" in html.unescape(srcdoc)
    policy = shown["Content-Security-Policy"]
    img_src = next(p for p in policy.split(";") if p.strip().startswith("img-src"))
    assert "https:" in img_src and "http:" in img_src
    assert "script-src 'self'" in policy  # only images were widened
    assert "Show images" not in shown.content.decode()


# --- Actions ----------------------------------------------------------------------------------------


def test_reply_appears_queued_at_once_and_errors_are_plain_words(as_member, member, support, sales):
    conversation = make_conversation(support, subject="Broken widget")
    response = as_member.post(
        f"/inbox/c/{conversation.pk}/reply/",
        {"text": "We are on it.", "next": f"/inbox/c/{conversation.pk}/?view=open"},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200
    body = response.content.decode()
    assert response["HX-Retarget"] == "#thread"
    assert "inboxReset" in response["HX-Trigger"] and "inboxRefresh" in response["HX-Trigger"]
    assert "We are on it." in body
    assert 'class="delivery badge state-queued"' in body and ">Queued<" in body
    assert 'id="conv-header" class="conv-header" hx-swap-oob="true"' in body
    assert "view=open" in body  # the refreshed thread keeps the page's list
    item = OutboxItem.objects.get()
    assert item.state == "queued" and item.recipients == ["carol@customer.example.com"]

    # An empty reply and an inbox without a team email: said in words, nothing queued.
    empty = as_member.post(
        f"/inbox/c/{conversation.pk}/reply/", {"text": "  "}, HTTP_HX_REQUEST="true"
    )
    assert empty["HX-Retarget"] == "#reply-error"
    assert "The reply is empty." in empty.content.decode()
    no_mailbox = make_conversation(sales)
    refused = as_member.post(
        f"/inbox/c/{no_mailbox.pk}/reply/", {"text": "Hello"}, HTTP_HX_REQUEST="true"
    )
    assert "no connected team email" in refused.content.decode()
    assert OutboxItem.objects.count() == 1

    # Without JavaScript: back to the page, with the outcome as a message.
    plain = as_member.post(
        f"/inbox/c/{no_mailbox.pk}/reply/",
        {"text": "Hello", "next": f"/inbox/c/{no_mailbox.pk}/"},
        follow=True,
    )
    assert "no connected team email" in plain.content.decode()


def test_reply_all_copies_the_other_recipients(as_member, support):
    conversation = make_conversation(support)
    Message.objects.filter(conversationmessage__conversation=conversation).update(
        cc=[{"name": "Dave", "address": "dave@customer.example.com"}]
    )
    body = page(as_member, f"/inbox/c/{conversation.pk}/")
    assert "Reply all" in body and "dave@customer.example.com" in body
    as_member.post(f"/inbox/c/{conversation.pk}/reply/", {"text": "Both of you", "reply_all": "1"})
    assert OutboxItem.objects.get().recipients == [
        "carol@customer.example.com",
        "dave@customer.example.com",
    ]


def test_notes_highlight_mentions_between_the_messages(as_member, member, admin, support):
    conversation = make_conversation(support, messages=2)
    response = as_member.post(
        f"/inbox/c/{conversation.pk}/notes/",
        {"text": "@ann can you check <b>this</b>?"},
        HTTP_HX_REQUEST="true",
    )
    body = response.content.decode()
    assert '<mark class="mention" title="Ann Smith">@ann</mark>' in body
    assert "&lt;b&gt;this&lt;/b&gt;" in body
    assert list(Note.objects.get().mentions.all()) == [admin]
    # Ann sees her own mention marked for her; a note that mentions nobody is plain.
    as_member.force_login(admin)
    assert 'class="mention me"' in page(as_member, f"/inbox/c/{conversation.pk}/")
    empty = as_member.post(
        f"/inbox/c/{conversation.pk}/notes/", {"text": ""}, HTTP_HX_REQUEST="true"
    )
    assert empty["HX-Retarget"] == "#note-error"
    assert "The note is empty." in empty.content.decode()


def test_assign_unassign_take_close_and_reopen_show_in_the_thread(
    as_member, member, other_member, support
):
    conversation = make_conversation(support)
    url = f"/inbox/c/{conversation.pk}/"
    as_member.post(url + "assign/", {"assignee": str(other_member.pk)}, HTTP_HX_REQUEST="true")
    conversation.refresh_from_db()
    assert conversation.assignee == other_member
    as_member.post(url + "assign/", {"assignee": "me"}, HTTP_HX_REQUEST="true")
    conversation.refresh_from_db()
    assert conversation.assignee == member
    as_member.post(url + "status/", {"status": "closed"}, HTTP_HX_REQUEST="true")
    conversation.refresh_from_db()
    assert conversation.status == "closed"
    response = as_member.post(url + "status/", {"status": "open"}, HTTP_HX_REQUEST="true")
    body = response.content.decode()
    assert "Bo Lee assigned this to Cy Young" in body
    assert "Bo Lee took this conversation" in body
    assert "Bo Lee closed this" in body and "Bo Lee reopened this" in body
    assert 'id="status-button"' in body and ">Close</button>" in body
    unassigned = as_member.post(url + "assign/", {"assignee": ""}, follow=True)
    conversation.refresh_from_db()
    assert conversation.assignee is None
    assert "Bo Lee unassigned this" in unassigned.content.decode()
    assert "Unassigned." in unassigned.content.decode()  # the no-JS flash message
    bad = as_member.post(url + "assign/", {"assignee": "nobody"}, HTTP_HX_REQUEST="true")
    assert bad["HX-Retarget"] == "#action-error" and "Unknown user." in bad.content.decode()
    other_account_user = as_member.post(
        url + "assign/", {"assignee": "00000000-0000-0000-0000-000000000000"}
    )
    assert other_account_user.status_code == 302
    assert ConversationEvent.objects.filter(conversation=conversation).count() == 5


def test_routing_explains_its_choice_in_the_thread(as_member, admin, member, other_member, support):
    member.is_available = False
    member.save()
    routing_rule_set(actor=admin, inbox=support, mode="round_robin", users=[member, other_member])
    conversation = make_conversation(support)
    body = page(as_member, f"/inbox/c/{conversation.pk}/")
    assert "Assigned to Cy Young by routing" in body
    assert "Round-robin: Cy Young&#x27;s turn (Bo Lee away)" in body

    # With everyone away it stays unassigned, and says why.
    other_member.is_available = False
    other_member.save()
    nobody = make_conversation(support)
    assert nobody.assignee is None
    body = page(as_member, f"/inbox/c/{nobody.pk}/")
    assert "Not assigned by routing" in body
    assert "Round-robin: nobody in the rule is available (Bo Lee away, Cy Young away)" in body


def test_the_thread_poll_answers_204_until_something_changes(as_member, member, support):
    conversation = make_conversation(support)
    body = page(as_member, f"/inbox/c/{conversation.pk}/")
    poll = html.unescape(re.search(r'id="thread" class="thread" hx-get="([^"]+)"', body).group(1))
    assert as_member.get(poll).status_code == 204
    note_create(actor=member, conversation=conversation, text="checking")
    changed = as_member.get(poll)
    assert changed.status_code == 200 and "checking" in changed.content.decode()
    # The header comes along out of band (status, assignee, count may have changed).
    assert 'id="conv-header" class="conv-header" hx-swap-oob="true"' in changed.content.decode()


def test_the_delivery_state_and_its_detail_are_shown(as_member, admin, support):
    from django.db import transaction

    from conversations.handling import conversation_reply

    conversation = make_conversation(support)
    with transaction.atomic():
        reply = conversation_reply(actor=admin, conversation=conversation, text="Done")
    body = page(as_member, f"/inbox/c/{conversation.pk}/")
    poll = html.unescape(re.search(r'id="thread" class="thread" hx-get="([^"]+)"', body).group(1))
    assert ">Queued<" in body
    OutboxItem.objects.filter(message=reply).update(
        state="failed", detail="550 mailbox unavailable"
    )
    changed = as_member.get(poll).content.decode()
    assert ">Failed<" in changed and "550 mailbox unavailable" in changed


def test_availability_toggle(as_member, member):
    response = as_member.post("/inbox/availability/", {}, HTTP_HX_REQUEST="true")
    member.refresh_from_db()
    assert member.is_available is False
    assert "You are away" in response.content.decode()
    as_member.post("/inbox/availability/", {"available": "1"})
    member.refresh_from_db()
    assert member.is_available is True


def test_every_write_needs_the_csrf_token(member, support):
    conversation = make_conversation(support)
    client = Client(enforce_csrf_checks=True)
    client.force_login(member)
    for action, data in [
        ("reply", {"text": "hi"}),
        ("notes", {"text": "hi"}),
        ("assign", {"assignee": "me"}),
        ("status", {"status": "closed"}),
    ]:
        response = client.post(f"/inbox/c/{conversation.pk}/{action}/", data)
        assert response.status_code == 403, action
    assert client.post("/inbox/availability/", {}).status_code == 403
    conversation.refresh_from_db()
    member.refresh_from_db()
    assert (conversation.status, conversation.assignee, member.is_available) == ("open", None, True)
    assert not OutboxItem.objects.exists() and not Note.objects.exists()

    # With the token (what the forms and htmx's X-CSRFToken header send) it works.
    body = page(client, f"/inbox/c/{conversation.pk}/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', body).group(1)
    response = client.post(
        f"/inbox/c/{conversation.pk}/notes/", {"text": "hi"}, HTTP_X_CSRFTOKEN=token
    )
    assert response.status_code == 302 and Note.objects.count() == 1


def test_plain_text_bodies_fold_the_quoted_history(as_member, support):
    text = "Thanks, that works.\n\nOn Mon, 3 Mar 2025 at 10:00, Acme wrote:\n> Try this.\n> Bye"
    conversation = make_conversation(support, text=text)
    body = page(as_member, f"/inbox/c/{conversation.pk}/")
    assert '<div class="email-text">Thanks, that works.</div>' in body
    assert '<details class="quoted"><summary>Quoted text</summary>' in body
    assert "&gt; Try this." in body


def test_plain_text_links_are_the_ones_urlize_made_and_hostile_text_stays_text(as_member, support):
    from django.template.defaultfilters import urlize

    from conversations.email_frame import linkify

    ordinary = [
        "See https://example.com/a?b=1&c=2. Thanks!",
        "(http://example.org/path) and [www.example.com], or example.net/x.",
        "Write to bob@example.com, or <https://acme.example.com/help>;",
        "Re: order PK1234: http://t.example.com/x?y=%20z#frag! HTTPS://EXAMPLE.COM/",
        "Not links: e.g. a.b, foo.community, 10:30, @handle, x@y",
        "Unicode: http://example.com/ü and bücher.example.com?",
    ]
    for text in ordinary:
        assert linkify(text) == urlize(text), text
    hostile = (
        "<script>alert(1)</script> <img src=x onerror=alert(2)> "
        'http://evil.example.com/"onmouseover="alert(3) javascript:alert(4) '
        "www.example.com/'onclick='alert(5) &amp;&lt;b&gt; mailto:x@y.com?subject=<b>"
    )
    conversation = make_conversation(support, text=hostile)
    body = page(as_member, f"/inbox/c/{conversation.pk}/")
    text_html = re.search(r'<div class="email-text">(.*?)</div>', body, re.S).group(1)
    assert "<script" not in text_html and "<img" not in text_html and "<b>" not in text_html
    links = tags(text_html, "a")
    assert links and all(set(link) <= {"href", "rel"} for link in links)
    assert all(link["href"].startswith(("http://", "https://", "mailto:")) for link in links)
    assert not any("javascript" in link["href"] for link in links)
    assert [t for t, _ in all_tags(text_html)] == ["a"] * len(links)


def all_tags(fragment: str) -> list:
    parser = Attrs()
    parser.feed(fragment)
    return parser.tags


def test_mark_read_is_one_statement_and_moves_forward(as_member, member, support):
    from conversations.handling import conversation_mark_read

    conversation = make_conversation(support)
    with CaptureQueriesContext(connection) as captured:
        conversation_mark_read(user=member, conversation=conversation)
    assert len(captured) == 1 and "ON CONFLICT" in captured[0]["sql"]
    first = ReadState.objects.get(user=member, conversation=conversation).read_at
    conversation_mark_read(user=member, conversation=conversation)
    assert ReadState.objects.filter(user=member, conversation=conversation).count() == 1
    assert ReadState.objects.get(user=member, conversation=conversation).read_at > first


def test_a_customer_answer_after_the_close_reopens_it_in_that_order(as_member, member, support):
    conversation = make_conversation(support, subject="Refund")
    first = conversation.messages.get()
    conversation_set_status(actor=member, conversation=conversation, status="closed")
    closed_at = ConversationEvent.objects.get(kind="closed").created_at
    # The answer's Date header (whole seconds, the sender's clock) is before the close.
    answer = make_message(support, subject="Re: Refund", text="Got it, thanks")
    Message.objects.filter(pk=answer.pk).update(
        in_reply_to=first.message_id, sent_at=closed_at - timedelta(seconds=1)
    )
    answer.refresh_from_db()
    thread_into_inbox(support, [answer], backfill=False)
    conversation.refresh_from_db()
    assert conversation.status == "open"

    body = page(as_member, f"/inbox/c/{conversation.pk}/")
    thread = body[body.index('id="thread"') :]
    positions = [
        thread.index(text)
        for text in ["Hello", "Bo Lee closed this", "Got it, thanks", "Reopened by the customer"]
    ]
    assert positions == sorted(positions)


def test_a_poll_after_the_session_ended_sends_the_whole_page_to_the_login(client, support):
    response = client.get(
        "/inbox/list/",
        {"v": "x"},
        HTTP_HX_REQUEST="true",
        HTTP_HX_CURRENT_URL="http://testserver/inbox/?view=mine",
    )
    assert response.status_code == 204
    assert response["HX-Redirect"] == "/login/?next=%2Finbox%2F%3Fview%3Dmine"
