"""The support team's daily screen, /inbox/: views and inboxes, the conversation
list, and the open conversation with its thread, notes, events and actions.

Server-rendered with htmx for navigation, polling and actions; every link and
form also works as a plain page without JavaScript. Visibility is enforced by
the selectors (conversations_visible_to); writes go through the services in
conversations/handling.py.

Email bodies are shown in ``<iframe sandbox srcdoc>`` (no allow-scripts, no
allow-same-origin). A srcdoc document inherits the page's Content-Security-
Policy, so the email's inline ``style`` attributes would be refused there; they
are moved into a per-message stylesheet served from this origin (frame_css).
Requests from the sandboxed (opaque-origin) frame carry no session cookie, so
the stylesheet and ``cid:`` images are fetched with a short-lived signed token
bound to the viewer, whose visibility is checked again on every request.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import wraps
from html import escape
from urllib.parse import urlencode, urlsplit

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.db.models import Count, Exists, F, Max, OuterRef, Q
from django.http import FileResponse, Http404, HttpResponse, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.urls import path, reverse
from django.utils import timezone
from django.utils.cache import patch_vary_headers
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_GET, require_POST

from accounts.models import User
from accounts.selectors import users_visible_to
from conversations import handling
from conversations.email_frame import (
    FRAME_CSS,
    email_frame,
    frame_viewer,
    linkify,
    rewrite_email,
    token_window,
)
from conversations.models import (
    Conversation,
    ConversationEvent,
    ConversationMessage,
    EventKind,
    Note,
)
from conversations.selectors import (
    conversation_detail,
    conversation_list,
    conversations_down_to,
    conversations_older_than,
    conversations_visible_to,
)
from core.errors import DomainError, Invalid
from core.web import back_to, report
from inboxes.models import Attachment, Direction, Inbox, Message, OutboxItem
from inboxes.selectors import inboxes_visible_to

VIEWS = [
    ("unassigned", "Unassigned"),
    ("mine", "Mine"),
    ("open", "All open"),
    ("closed", "Closed"),
]
VIEW_NAMES = dict(VIEWS)
DEFAULT_VIEW = "unassigned"
PAGE_SIZE = 50
MAX_ROWS = 500
POLL = "every 3s"
# Raster images a browser shows; everything else (SVG included) downloads as bytes.
SAFE_IMAGE_TYPES = {
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "image/bmp",
    "image/avif",
}


# --- The list's state: view, inbox, search, keyset cursors ---------------------------------------


@dataclass
class ListState:
    view: str = DEFAULT_VIEW
    inbox: Inbox | None = None
    q: str = ""
    # The list starts after this row ("Show more" without JavaScript pages this way).
    after: str = ""
    # A poll of the list's first page once pages were appended below it: refresh the
    # rows down to this one (the first appended page starts right after it).
    upto: str = ""
    images: bool = False

    def params(self, **changes) -> dict[str, str]:
        values = {
            "view": self.view,
            "inbox": str(self.inbox.pk) if self.inbox else "",
            "q": self.q,
            "after": self.after,
        }
        values.update(changes)
        if values["view"] == DEFAULT_VIEW:
            values["view"] = ""
        return {key: value for key, value in values.items() if value}

    def query(self, **changes) -> str:
        return urlencode(self.params(**changes))

    @property
    def title(self) -> str:
        if self.q:
            where = f" in {self.inbox.name}" if self.inbox else ""
            return f"Search “{self.q}”{where}"
        name = VIEW_NAMES[self.view]
        return f"{self.inbox.name} · {name}" if self.inbox else name


def _list_state(request) -> ListState:
    return _state_from(request.user, request.GET)


def _state_from(user, data) -> ListState:
    inbox = None
    if data.get("inbox"):
        visible = inboxes_visible_to(user).select_related(None).prefetch_related(None)
        inbox = get_object_or_404(visible, pk=_uuid_or_404(data["inbox"]))
    # Every appended page names its start; the first one's is where the first page ends.
    upto = (data.getlist("upto") or [""])[0]
    view = data.get("view") or ("open" if inbox else DEFAULT_VIEW)
    if view not in VIEW_NAMES:
        view = DEFAULT_VIEW
    return ListState(
        view=view,
        inbox=inbox,
        q=" ".join((data.get("q") or "").split())[:200],
        after=data.get("after", "") if _cursor_key(data.get("after", "")) else "",
        upto=upto if _cursor_key(upto) else "",
        images=data.get("images") == "1",
    )


def _uuid_or_404(value) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise Http404("Unknown id.") from None


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _cursor(row: dict) -> str:
    """A row's place in the list (last_message_at, id), exact to the microsecond."""
    moment = row["last_message_at"]
    stamp = "-" if moment is None else str((moment - _EPOCH) // _MICROSECOND)
    return f"{stamp}.{row['id'].hex}"


def _cursor_key(value: str) -> tuple[datetime | None, uuid.UUID] | None:
    stamp, _, pk = (value or "").partition(".")
    try:
        moment = None if stamp == "-" else _EPOCH + int(stamp) * _MICROSECOND
        return moment, uuid.UUID(hex=pk)
    except (ValueError, OverflowError):
        return None


# --- Time labels ------------------------------------------------------------------------------------


def _when(moment: datetime | None, now: datetime | None = None) -> str:
    """Short, stable labels (no "3 min ago" that would change on every poll)."""
    if moment is None:
        return ""
    now = timezone.localtime(now or timezone.now())
    return _local_label(timezone.localtime(moment), now.date())


def _local_label(moment: datetime, today) -> str:
    """_when for a moment already in local time."""
    if moment.date() == today:
        return moment.strftime("%H:%M")
    if moment.year == today.year:
        return f"{moment.day} {moment:%b}"
    return f"{moment.day} {moment:%b %Y}"


def _full_time(moment: datetime | None) -> str:
    if moment is None:
        return ""
    return _local_full_time(timezone.localtime(moment))


def _local_full_time(moment: datetime) -> str:
    return f"{moment:%a} {moment.day} {moment:%b %Y, %H:%M}"


# --- The left pane: views and inboxes with counts ---------------------------------------------------


def _nav(user, state: ListState) -> dict:
    """Open conversations only, counted per inbox in one query (an index-only scan of
    conv_nav_counts); the views' totals are sums. "Closed" shows no number: counting
    the closed majority of the table was most of the cost of every poll."""
    inboxes = list(
        inboxes_visible_to(user)
        .select_related(None)
        .prefetch_related(None)
        .only("pk", "name")
        .order_by("name")
    )
    per_inbox = {
        row["inbox"]: row
        for row in Conversation.objects.filter(
            account_id=user.account_id, status="open", inbox__in=[inbox.pk for inbox in inboxes]
        )
        .order_by()
        .values("inbox")
        .annotate(
            open=Count("inbox"),
            unassigned=Count("inbox", filter=Q(assignee__isnull=True)),
            mine=Count("inbox", filter=Q(assignee=user)),
        )
    }
    counts = {
        key: sum(row[key] for row in per_inbox.values()) for key in ("unassigned", "mine", "open")
    }
    counts["closed"] = None
    views = [
        {
            "key": key,
            "name": name,
            "count": counts[key],
            "url": "?" + ListState(view=key).query() if key != DEFAULT_VIEW else "",
            "active": not state.inbox and not state.q and state.view == key,
        }
        for key, name in VIEWS
    ]
    inbox_entries = [
        {
            "pk": inbox.pk,
            "name": inbox.name,
            "count": per_inbox.get(inbox.pk, {}).get("open", 0),
            "url": "?" + ListState(view="open", inbox=inbox).query(),
            "active": state.inbox is not None and state.inbox.pk == inbox.pk,
        }
        for inbox in inboxes
    ]
    return {"views": views, "inboxes": inbox_entries}


# --- The middle pane: the conversation list ---------------------------------------------------------

ROW_VALUES = (
    "id",
    "subject",
    "status",
    "customer_address",
    "customer_name",
    "snippet",
    "last_message_at",
    "message_count",
    "inbox_id",
    "assignee_id",
    "is_read",
)


def _rows(user, state: ListState) -> tuple[list[dict], bool]:
    """One query whatever the number of rows or how deep the page is: a keyset
    cursor (``after``) starts the scan at its row, the customer's name and the
    snippet are stored on the conversation. Plain values, no model instances:
    the rows are only shown.

    Without ``upto``: a page of PAGE_SIZE rows. With it (the first page's poll once
    pages were appended below): every row down to that one, so that no row falls
    into a gap between the first page and the appended ones."""
    conversations = conversation_list(
        user,
        view="" if state.q else state.view,
        inbox=state.inbox,
        search=state.q,
    )
    if state.after:
        conversations = conversations_older_than(conversations, *_cursor_key(state.after))
    limit = PAGE_SIZE
    if state.upto:
        conversations = conversations_down_to(conversations, *_cursor_key(state.upto))
        limit = MAX_ROWS
    rows = list(
        conversations.values(
            *ROW_VALUES,
            inbox_name=F("inbox__name"),
            assignee_full_name=F("assignee__full_name"),
            assignee_email=F("assignee__email"),
        )[: limit + 1]
    )
    more = len(rows) > limit
    rows = rows[:limit]
    zone = timezone.get_current_timezone()
    today = timezone.now().astimezone(zone).date()
    url_head, url_tail = _conversation_url_parts()
    for row in rows:
        row["pk"] = row["id"]
        row["url"] = f"{url_head}{row['id']}{url_tail}"
        moment = row["last_message_at"]
        if moment is None:
            row["iso"] = row["when"] = row["when_full"] = ""
        else:
            moment = moment.astimezone(zone)
            row["iso"] = moment.isoformat()
            row["when"] = _local_label(moment, today)
            row["when_full"] = _local_full_time(moment)
        row["customer"] = row["customer_name"] or row["customer_address"] or "(unknown sender)"
        row["snippet_text"] = row["snippet"][:140]
        row["assignee_name"] = (
            (row["assignee_full_name"] or row["assignee_email"]) if row["assignee_id"] else ""
        )
    return rows, more


def _conversation_url_parts() -> tuple[str, str]:
    """inbox-conversation's URL around its id, reversed once per list."""
    sample = uuid.UUID(int=0)
    head, tail = reverse("inbox-conversation", args=[sample]).split(str(sample))
    return head, tail


def _row_data(row: dict) -> tuple:
    """Everything a row shows, for the list's version."""
    return tuple(
        row[key]
        for key in (
            "id",
            "last_message_at",
            "status",
            "is_read",
            "subject",
            "customer",
            "snippet_text",
            "message_count",
            "inbox_id",
            "inbox_name",
            "assignee_id",
            "assignee_name",
        )
    )


def _list_context(request, state: ListState) -> dict:
    """The list's first page (or, with ``upto``, its rows down to the appended pages)
    and the left pane, with a version of what they show: the poll compares versions
    before anything is rendered."""
    rows, more = _rows(request.user, state)
    # With upto there are appended pages, which carry "Show more": the same version as
    # the first page had when "Show more" was clicked, so an unchanged poll stays 204.
    more = True if state.upto else more
    nav = _nav(request.user, state)
    version_data = [
        state.query(),
        timezone.localdate(),  # the time labels change at midnight
        request.user.is_admin,
        more,
        [_row_data(row) for row in rows],
        [(view["key"], view["count"]) for view in nav["views"]],
        [(entry["pk"], entry["name"], entry["count"]) for entry in nav["inboxes"]],
    ]
    return {
        "state": state,
        "rows": rows,
        "more": more and not state.upto,
        "more_query": state.query(after=_cursor(rows[-1])) if rows else "",
        "row_query": state.query(),
        "chips": [
            {
                "key": key,
                "name": name,
                "query": state.query(view=key, q="", after=""),
                "active": not state.q and state.view == key,
            }
            for key, name in VIEWS
        ],
        "nav": nav,
        "version": hashlib.sha256(repr(version_data).encode()).hexdigest()[:16],
        "poll": POLL,
    }


def _render_list(request, context: dict, template: str = "inbox/_list.html") -> tuple[str, str]:
    """The list (whole, or its polled first page) and the left pane."""
    list_html = render_to_string(template, context, request=request)
    nav_html = render_to_string("inbox/_nav.html", context, request=request)
    return list_html, nav_html


def _next_page(request, state: ListState) -> HttpResponse:
    """ "Show more": the page of rows after ``state.after``, appended below the list by
    htmx, and the next "Show more" out of band. Its cost does not depend on depth."""
    rows, more = _rows(request.user, state)
    context = {
        "state": state,
        "rows": rows,
        "more": more,
        "more_query": state.query(after=_cursor(rows[-1])) if rows else "",
        "row_query": state.query(),
        "oob": True,
    }
    response = render(request, "inbox/_page_rows.html", context)
    patch_vary_headers(response, ["HX-Request"])
    return response


_QUOTE_INTRO = re.compile(r"(wrote|schreef|schrieb|a écrit|escribió)\s*:\s*$", re.IGNORECASE)


def _split_quote(text: str) -> tuple[str, str]:
    """A plain-text body and the quoted history at its end (shown folded)."""
    lines = (text or "").rstrip().splitlines()
    start = len(lines)
    while start > 0 and (lines[start - 1].startswith(">") or not lines[start - 1].strip()):
        start -= 1
    if start == len(lines) or not any(line.startswith(">") for line in lines[start:]):
        return "\n".join(lines), ""
    if start > 0 and _QUOTE_INTRO.search(lines[start - 1]):
        start -= 1
    body = "\n".join(lines[:start]).rstrip()
    if not body:
        return "\n".join(lines), ""
    return body, "\n".join(lines[start:])


# --- The right pane: one conversation ---------------------------------------------------------------

_MENTION = re.compile(r"(?<![\w.])@([\w.+-]+(?:@[\w-]+(?:\.[\w-]+)+)?)")


def _note_html(note: Note, viewer) -> str:
    """The note's text, escaped, with the @mentions that named someone highlighted."""
    people = list(note.mentions.all())

    def named(token: str):
        token = token.lower().rstrip(".")
        for person in people:
            first = person.full_name.split()[0].lower() if person.full_name else ""
            if token in (person.email, person.email.split("@")[0], first):
                return person
        return None

    parts, last = [], 0
    for match in _MENTION.finditer(note.text):
        person = named(match.group(1))
        if person is None:
            continue
        parts.append(escape(note.text[last : match.start()]))
        css = "mention me" if person.pk == viewer.pk else "mention"
        parts.append(
            f'<mark class="{css}" title="{escape(person.display_name)}">'
            f"{escape(match.group(0))}</mark>"
        )
        last = match.end()
    parts.append(escape(note.text[last:]))
    return mark_safe("".join(parts))  # noqa: S308 - every piece is escaped above


def _name(user) -> str:
    return user.display_name if user else "Someone"


def _event_text(event: ConversationEvent) -> tuple[str, str]:
    """What happened, and why (routing explains its choice)."""
    detail = event.detail or {}
    why = ""
    if detail.get("rule") == "round_robin":
        skipped = ", ".join(
            re.sub(r"^(.*) \((away|deactivated)\)$", r"\1 \2", entry)
            for entry in detail.get("skipped") or []
        )
        if event.kind == EventKind.ASSIGNED:
            why = f"Round-robin: {detail.get('turn') or _name(event.assignee)}'s turn"
        else:
            why = f"Round-robin: {detail.get('reason') or 'nobody could take it'}"
        if skipped:
            why += f" ({skipped})"
    elif detail.get("reason"):
        why = str(detail["reason"])
    if event.kind == EventKind.ASSIGNED:
        if event.actor_id is None:
            text = f"Assigned to {_name(event.assignee)} by routing"
        elif event.assignee_id == event.actor_id:
            text = f"{_name(event.actor)} took this conversation"
        else:
            text = f"{_name(event.actor)} assigned this to {_name(event.assignee)}"
    elif event.kind == EventKind.UNASSIGNED:
        if event.actor_id:
            text = f"{_name(event.actor)} unassigned this"
        else:
            text = "Not assigned by routing" if detail.get("rule") else "Unassigned"
    elif event.kind == EventKind.CLOSED:
        text = f"{_name(event.actor)} closed this"
    else:
        if event.actor_id:
            text = f"{_name(event.actor)} reopened this"
        else:
            text = "Reopened by the customer's reply"
            why = ""
    return text, why


def _people(entries) -> str:
    out = []
    for entry in entries or []:
        address = entry.get("address") or ""
        name = entry.get("name") or ""
        out.append(f"{name} <{address}>" if name and name != address else address)
    return ", ".join(out)


def _message_item(message: Message, *, user, remote: bool) -> dict:
    item = {
        "kind": "message",
        "at": message.sent_at or message.created_at,
        "message": message,
        "sender": message.from_name or message.from_address or "(unknown sender)",
        "to": _people(message.to),
        "cc": _people(message.cc),
        "attachments": [a for a in message.attachments.all() if not _shown_inline(a, message)],
        "outbound": message.direction == Direction.OUTBOUND,
        "blocked": 0,
    }
    item["delivery"] = _outbox_of(message)
    if message.html:
        item["frame"] = email_frame(message, user=user, remote=remote)
        item["blocked"] = item["frame"]["blocked"]
    else:
        body, quoted = _split_quote(message.text)
        item["body_html"], item["quoted_html"] = linkify(body), linkify(quoted) if quoted else ""
    return item


def _timeline(conversation: Conversation, *, user, remote: bool) -> tuple[list[dict], int]:
    """Messages in their own order (Date), with notes and events placed by when they
    happened relative to the messages' arrival here: a sender's clock (and a Date
    header's whole seconds) cannot put a customer's answer before the close it
    answered."""
    messages = list(conversation.thread)
    arrived = [m.created_at for m in messages]
    others: list[tuple[int, datetime, int, dict]] = []
    for note in conversation.notes.all():
        item = {"kind": "note", "at": note.created_at, "note": note, "html": _note_html(note, user)}
        others.append((sum(a <= note.created_at for a in arrived), note.created_at, 0, item))
    for event in conversation.events.all():
        text, why = _event_text(event)
        item = {"kind": "event", "at": event.created_at, "event": event, "text": text, "why": why}
        others.append((sum(a <= event.created_at for a in arrived), event.created_at, 1, item))
    others.sort(key=lambda entry: entry[:3])

    items: list[dict] = []
    pending = iter(others)
    entry = next(pending, None)
    for index, message in enumerate([*messages, None]):
        while entry is not None and entry[0] <= index:
            items.append(entry[3])
            entry = next(pending, None)
        if message is None:
            break
        items.append(_message_item(message, user=user, remote=remote))
    zone = timezone.get_current_timezone()
    today = timezone.now().astimezone(zone).date()
    for item in items:
        moment = item["at"].astimezone(zone)
        item["iso"] = moment.isoformat()
        item["when"] = _local_label(moment, today)
        item["when_full"] = _local_full_time(moment)
    return items, sum(item.get("blocked", 0) for item in items)


def _shown_inline(attachment: Attachment, message: Message) -> bool:
    """An inline image the HTML body references is shown there, not listed."""
    return bool(
        attachment.content_id
        and message.html
        and f"cid:{attachment.content_id}".lower() in message.html.lower()
    )


_VERSION_ROW = (
    "status",
    "assignee_id",
    "message_count",
    "last_message_at",
    "updated_at",
    "subject",
)


def _thread_version(conversation: Conversation, state: ListState) -> str:
    """Changes whenever anything the thread or its header shows changes (the poll's
    check, from four small queries)."""
    pk = conversation.pk
    row = Conversation.objects.filter(pk=pk).values_list(*_VERSION_ROW)
    outbox = OutboxItem.objects.filter(message__conversationmessage__conversation_id=pk)
    notes = Note.objects.filter(conversation_id=pk).aggregate(n=Count("pk"), last=Max("created_at"))
    events = ConversationEvent.objects.filter(conversation_id=pk).aggregate(
        n=Count("pk"), last=Max("id")
    )
    data = [list(row), sorted(outbox.values_list("pk", "state", "detail")), notes, events]
    return _version_of(data, state)


def _loaded_thread_version(detail: Conversation, state: ListState) -> str:
    """_thread_version from what conversation_detail loaded already (no query)."""
    outbox = [m.outbox for m in detail.thread if _outbox_of(m) is not None]
    notes = list(detail.notes.all())
    events = list(detail.events.all())
    data = [
        [tuple(getattr(detail, field) for field in _VERSION_ROW)],
        sorted((item.pk, item.state, item.detail) for item in outbox),
        {"n": len(notes), "last": max((note.created_at for note in notes), default=None)},
        {"n": len(events), "last": max((event.id for event in events), default=None)},
    ]
    return _version_of(data, state)


def _version_of(data: list, state: ListState) -> str:
    data += [token_window(), state.images]
    return hashlib.sha256(repr(data).encode()).hexdigest()[:16]


def _outbox_of(message: Message) -> OutboxItem | None:
    try:
        return message.outbox
    except OutboxItem.DoesNotExist:
        return None


def _reply_preview(conversation: Conversation) -> dict:
    """Who a reply and a reply-all go to (the service decides; this only shows it)."""
    team = (
        conversation.inbox.mailbox.canonical_address if conversation.inbox.mailbox else ""
    ) or ""
    inbound = [m for m in conversation.thread if m.direction == Direction.INBOUND]
    last = inbound[-1] if inbound else (conversation.thread[-1] if conversation.thread else None)
    if last is None:
        return {"to": "", "others": ""}
    if last.direction == Direction.INBOUND:
        to = [{"name": last.from_name, "address": last.from_address}]
    else:
        to = [e for e in last.to or [] if (e.get("address") or "").lower() != team]
    seen = {(e.get("address") or "").lower() for e in to} | {team}
    others = []
    for entry in [*(last.to or []), *(last.cc or [])]:
        address = (entry.get("address") or "").lower()
        if address and address not in seen:
            seen.add(address)
            others.append(entry)
    return {"to": _people(to), "others": _people(others)}


def _assignable(conversation: Conversation, user) -> list[User]:
    people = users_visible_to(user).filter(is_active=True)
    inbox = conversation.inbox
    if inbox.restricted:
        people = people.filter(
            Q(role="admin") | Q(teams__in=inbox.visible_to_teams.all())
        ).distinct()
    return list(people.order_by("full_name", "email"))


def _conversation_context(request, conversation: Conversation, state: ListState) -> dict:
    detail = conversation_detail(conversation)
    timeline, blocked = _timeline(detail, user=request.user, remote=state.images)
    mailbox = detail.inbox.mailbox
    page_query = state.query(images="1" if state.images else "")
    return {
        "conversation": detail,
        "timeline": timeline,
        "blocked_images": blocked,
        "state": state,
        "images_query": state.query(images="1"),
        "next": reverse("inbox-conversation", args=[detail.pk]) + "?" + page_query,
        "thread_query": page_query,
        "version": _loaded_thread_version(detail, state),
        "assignable": _assignable(detail, request.user),
        "reply": _reply_preview(detail),
        "from_line": (
            f"{detail.inbox.from_name} <{mailbox.address}>"
            if mailbox and detail.inbox.from_name
            else (mailbox.address if mailbox else "")
        ),
        "can_reply": bool(mailbox and mailbox.is_connected),
        "poll": POLL,
    }


def _visible_conversation(request, pk) -> Conversation:
    return get_object_or_404(
        conversations_visible_to(request.user).select_related("inbox__mailbox", "assignee"),
        pk=pk,
    )


def _login_required(view):
    """login_required, but an htmx request (a poll whose session ended) is sent to
    the login page as a whole page rather than getting it swapped into a pane."""
    plain = login_required(view)

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if not request.user.is_authenticated and getattr(request, "htmx", False):
            back = request.htmx.current_url_abs_path or reverse("inbox")
            response = HttpResponse(status=204)
            response["HX-Redirect"] = f"{reverse('login')}?{urlencode({'next': back})}"
            return response
        return plain(request, *args, **kwargs)

    return wrapper


# --- Pages ---------------------------------------------------------------------------------------------


def _page(request, state: ListState, conversation: Conversation | None = None):
    list_html, nav_html = _render_list(request, _list_context(request, state))
    context = {
        "section": "inbox",
        "state": state,
        "list_html": mark_safe(list_html),  # noqa: S308 - rendered templates
        "nav_html": mark_safe(nav_html),  # noqa: S308
        "available": request.user.is_available,
        "conversation": None,
        "next": request.get_full_path(),
    }
    if conversation is not None:
        context.update(_conversation_context(request, conversation, state))
    response = render(request, "inbox/page.html", context)
    patch_vary_headers(response, ["HX-Request", "HX-Target"])
    return response


def _partial_target(request) -> str | None:
    htmx = getattr(request, "htmx", None)
    if not htmx or htmx.history_restore_request:
        return None
    return htmx.target


@_login_required
@require_GET
def inbox(request):
    """The screen: views, the list, and (nothing open yet) a hint."""
    state = _list_state(request)
    if _partial_target(request) == "conv-list":
        return inbox_list(request)
    return _page(request, state)


@_login_required
@require_GET
def inbox_list(request):
    """The list (and the left pane's counts, out of band). A poll (``v``) gets 204
    when nothing it shows changed, decided before anything is rendered, else only
    the first page; ``after`` (htmx) is "Show more": the next page only."""
    state = _list_state(request)
    polled = request.GET.get("v")
    if state.after and not polled and request.htmx:
        return _next_page(request, state)
    context = _list_context(request, state)
    if polled and polled == context["version"]:
        return HttpResponse(status=204)
    context.update(oob=True, polled=bool(polled))
    list_html, nav_html = _render_list(
        request, context, "inbox/_list_top.html" if polled else "inbox/_list.html"
    )
    response = HttpResponse(list_html + nav_html)
    if not polled:
        # A search: keep the address bar in step with what is shown.
        response["HX-Replace-Url"] = reverse("inbox") + (
            "?" + state.query() if state.query() else ""
        )
    patch_vary_headers(response, ["HX-Request"])
    return response


@_login_required
@require_GET
def conversation_page(request, pk):
    """One conversation: the whole page, or only the right pane for htmx. Viewing
    it marks it read. ``images=1`` also loads remote images, with a CSP to match."""
    state = _list_state(request)
    conversation = _visible_conversation(request, pk)
    handling.conversation_mark_read(user=request.user, conversation=conversation)
    if _partial_target(request) == "conversation-pane":
        response = render(
            request,
            "inbox/_conversation.html",
            _conversation_context(request, conversation, state),
        )
        patch_vary_headers(response, ["HX-Request", "HX-Target"])
    else:
        response = _page(request, state, conversation)
    if state.images:
        # django-csp 4's per-response update (what @csp_update sets).
        response._csp_update = {"img-src": ["https:", "http:"]}
    return response


@_login_required
@require_GET
def conversation_thread(request, pk):
    """The thread (and the header, out of band) for the poller; 204 if unchanged."""
    state = _list_state(request)
    conversation = _visible_conversation(request, pk)
    if request.GET.get("v") == _thread_version(conversation, state):
        return HttpResponse(status=204)
    handling.conversation_mark_read(user=request.user, conversation=conversation)
    return _thread_response(request, conversation, state)


def _thread_response(request, conversation: Conversation, state: ListState, **extra):
    context = _conversation_context(request, conversation, state)
    context.update(extra)
    response = render(request, "inbox/_thread_update.html", context)
    patch_vary_headers(response, ["HX-Request"])
    return response


# --- Actions -------------------------------------------------------------------------------------------


def _acted(request, conversation, *, slot: str, reset: bool = False, done: str = ""):
    """After a successful action: the fresh thread and header for htmx, else back
    to the page."""
    state = _list_state_from_post(request)
    if not request.htmx:
        if done:
            messages.success(request, done)
        return back_to(request, reverse("inbox-conversation", args=[conversation.pk]))
    handling.conversation_mark_read(user=request.user, conversation=conversation)
    response = _thread_response(request, conversation, state, cleared_slot=slot)
    events = {"inboxRefresh": True}
    if reset:
        events["inboxReset"] = True
    response["HX-Trigger"] = json.dumps(events)
    response["HX-Retarget"] = "#thread"
    response["HX-Reswap"] = "outerHTML"
    return response


def _failed(request, conversation, exc: DomainError, *, slot: str):
    if not request.htmx:
        report(request, exc)
        return back_to(request, reverse("inbox-conversation", args=[conversation.pk]))
    response = render(request, "inbox/_error.html", {"slot": slot, "error": exc.detail})
    response["HX-Retarget"] = f"#{slot}"
    response["HX-Reswap"] = "outerHTML"
    return response


def _list_state_from_post(request) -> ListState:
    """The list parameters of the page the form was on (its ``next``), for the
    refreshed thread's links and poller."""
    query = urlsplit(request.POST.get("next", "")).query
    try:
        return _state_from(request.user, QueryDict(query))
    except Http404:
        return ListState()


@_login_required
@require_POST
def conversation_reply(request, pk):
    conversation = _visible_conversation(request, pk)
    try:
        with transaction.atomic():
            handling.conversation_reply(
                actor=request.user,
                conversation=conversation,
                text=request.POST.get("text", ""),
                reply_all=request.POST.get("reply_all") == "1",
            )
    except DomainError as exc:
        return _failed(request, conversation, exc, slot="reply-error")
    return _acted(request, conversation, slot="reply-error", reset=True, done="Reply queued.")


@_login_required
@require_POST
def conversation_note(request, pk):
    conversation = _visible_conversation(request, pk)
    try:
        handling.note_create(
            actor=request.user, conversation=conversation, text=request.POST.get("text", "")
        )
    except DomainError as exc:
        return _failed(request, conversation, exc, slot="note-error")
    return _acted(request, conversation, slot="note-error", reset=True, done="Note added.")


@_login_required
@require_POST
def conversation_assign(request, pk):
    conversation = _visible_conversation(request, pk)
    value = request.POST.get("assignee", "")
    try:
        if value == "me":
            assignee = request.user
        elif value:
            try:
                assignee = users_visible_to(request.user).get(pk=uuid.UUID(value))
            except (ValueError, User.DoesNotExist):
                raise Invalid("Unknown user.") from None
        else:
            assignee = None
        handling.conversation_assign(
            actor=request.user, conversation=conversation, assignee=assignee
        )
    except DomainError as exc:
        return _failed(request, conversation, exc, slot="action-error")
    done = f"Assigned to {assignee.display_name}." if assignee else "Unassigned."
    return _acted(request, conversation, slot="action-error", done=done)


@_login_required
@require_POST
def conversation_status(request, pk):
    conversation = _visible_conversation(request, pk)
    status = request.POST.get("status", "")
    try:
        handling.conversation_set_status(
            actor=request.user, conversation=conversation, status=status
        )
    except DomainError as exc:
        return _failed(request, conversation, exc, slot="action-error")
    done = "Conversation closed." if status == "closed" else "Conversation reopened."
    return _acted(request, conversation, slot="action-error", done=done)


@_login_required
@require_POST
def availability(request):
    available = request.POST.get("available") in ("1", "on", "true")
    handling.user_set_available(user=request.user, available=available)
    if request.htmx:
        return render(request, "inbox/_availability.html", {"available": available})
    messages.success(
        request,
        "You are available for new conversations."
        if available
        else "You will not get new conversations until you are available again.",
    )
    return back_to(request, reverse("inbox"))


# --- Files for the email frame and downloads --------------------------------------------------------


def _in_visible_conversation(user):
    return Exists(
        ConversationMessage.objects.filter(
            message=OuterRef("pk"),
            conversation__in=conversations_visible_to(user),
        )
    )


@require_GET
def attachment_download(request, pk):
    """An attachment, always as a download; images keep their type (so an inline
    ``cid:`` image shows in the email frame), anything else is plain bytes."""
    user = frame_viewer(request, "attachment", pk)
    if user is None:
        if request.GET.get("t"):
            raise Http404("Unknown attachment.")
        return redirect(f"{reverse('login')}?{urlencode({'next': request.get_full_path()})}")
    visible = ConversationMessage.objects.filter(
        message=OuterRef("message_id"), conversation__in=conversations_visible_to(user)
    )
    attachment = get_object_or_404(Attachment.objects.filter(Exists(visible)), pk=pk)
    content_type = attachment.content_type.lower().split(";")[0].strip()
    if content_type not in SAFE_IMAGE_TYPES:
        content_type = "application/octet-stream"
    try:
        data = attachment.file.open("rb")
    except (FileNotFoundError, ValueError):
        raise Http404("The file of this attachment is gone.") from None
    response = FileResponse(
        data,
        as_attachment=True,
        filename=attachment.filename or "attachment",
        content_type=content_type,
    )
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response["Cache-Control"] = "private, max-age=3600"
    return response


@require_GET
def frame_css(request, pk):
    """The stylesheet of one email's frame: the base look and the email's own
    inline styles, which the page's CSP would refuse as attributes."""
    user = frame_viewer(request, "css", pk)
    if user is None:
        raise Http404("Unknown message.")
    message = get_object_or_404(
        Message.objects.filter(_in_visible_conversation(user)).only("pk", "html"), pk=pk
    )
    rewriter = rewrite_email(message, images={}, remote=False)
    response = HttpResponse(FRAME_CSS + rewriter.css(), content_type="text/css; charset=utf-8")
    response["Cache-Control"] = "private, max-age=3600"
    return response


# --- Routes (included from config/web_urls.py under /inbox/) ----------------------------------------

urlpatterns = [
    path("", inbox, name="inbox"),
    path("list/", inbox_list, name="inbox-list"),
    path("availability/", availability, name="inbox-availability"),
    path("c/<uuid:pk>/", conversation_page, name="inbox-conversation"),
    path("c/<uuid:pk>/thread/", conversation_thread, name="inbox-thread"),
    path("c/<uuid:pk>/reply/", conversation_reply, name="inbox-reply"),
    path("c/<uuid:pk>/notes/", conversation_note, name="inbox-note"),
    path("c/<uuid:pk>/assign/", conversation_assign, name="inbox-assign"),
    path("c/<uuid:pk>/status/", conversation_status, name="inbox-status"),
    path("attachments/<uuid:pk>/", attachment_download, name="inbox-attachment"),
    path("messages/<uuid:pk>/frame.css", frame_css, name="inbox-frame-css"),
]
