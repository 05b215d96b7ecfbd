"""What the inbox screen shows: the left pane, a row of the list, the open
conversation, and the versions its pollers compare: plain values for the
templates, decided here, not in them.

Time labels are short and stable (no "3 min ago" that would change on every
poll). Email bodies are framed by conversations/email_frame.py; plain-text
bodies are linkified with their quoted history folded.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from datetime import date, datetime
from html import escape
from typing import Any

from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.safestring import SafeString, mark_safe

from accounts.models import User
from conversations.email_frame import email_frame, linkify, token_window
from conversations.inbox_state import DEFAULT_VIEW, VIEWS, ListState
from conversations.mail_banner import mail_banner
from conversations.mentions import MENTION, handle_key, person_named
from conversations.models import Conversation, ConversationEvent, EventKind, Note
from conversations.saved_replies import saved_replies_of
from conversations.selectors import (
    VERSION_ROW,
    assignable_people,
    conversation_detail,
    inbox_names_visible_to,
    open_counts_per_inbox,
    thread_state,
)
from conversations.snooze import snooze_presets
from inboxes.delivery import delivery_of
from inboxes.models import Attachment, Direction, Message, MessageKind, OutboxItem, OutboxState

# How often the list and the open thread ask whether anything they show changed.
POLL = "every 3s"

# --- Time labels ------------------------------------------------------------------------------------


def when_label(moment: datetime | None, now: datetime | None = None) -> str:
    """Short, stable labels (no "3 min ago" that would change on every poll)."""
    if moment is None:
        return ""
    now = timezone.localtime(now or timezone.now())
    return local_label(timezone.localtime(moment), now.date())


def local_label(moment: datetime, today: date) -> str:
    """when_label for a moment already in local time."""
    if moment.date() == today:
        return moment.strftime("%H:%M")
    if moment.year == today.year:
        return f"{moment.day} {moment:%b}"
    return f"{moment.day} {moment:%b %Y}"


def snooze_label(moment: datetime, today: date | None = None) -> str:
    """ "14:05" today, "Tue 8 Dec, 09:00" another day (local time)."""
    local = timezone.localtime(moment)
    if local.date() == (today or timezone.localdate()):
        return f"{local:%H:%M}"
    return f"{local:%a} {local.day} {local:%b}, {local:%H:%M}"


def full_time(moment: datetime | None) -> str:
    if moment is None:
        return ""
    return local_full_time(timezone.localtime(moment))


def local_full_time(moment: datetime) -> str:
    return f"{moment:%a} {moment.day} {moment:%b %Y, %H:%M}"


# --- The left pane: views and inboxes with counts ---------------------------------------------------


def nav_panel(user: User, state: ListState) -> dict[str, Any]:
    """Open conversations only, counted per inbox in one query (an index-only scan of
    conv_nav_counts); the views' totals are sums. "Closed" shows no number: counting
    the closed majority of the table was most of the cost of every poll."""
    inboxes = list(inbox_names_visible_to(user))
    per_inbox = open_counts_per_inbox(user, [inbox.pk for inbox in inboxes])
    counts: dict[str, int | None] = {
        key: sum(row[key] for row in per_inbox.values()) for key in ("unassigned", "mine", "open")
    }
    counts["closed"] = counts["bounces"] = counts["mentions"] = counts["snoozed"] = None
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


# --- A row of the conversation list -----------------------------------------------------------------


def present_rows(rows: list[dict[str, Any]]) -> None:
    """Add what each row shows (link, time labels, customer, snippet, assignee) to
    the plain values of conversations.selectors.conversation_rows."""
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
            row["when"] = local_label(moment, today)
            row["when_full"] = local_full_time(moment)
        row["customer"] = row["customer_name"] or row["customer_address"] or "(unknown sender)"
        row["snippet_text"] = row["snippet"][:140]
        row["assignee_name"] = (
            (row["assignee_full_name"] or row["assignee_email"]) if row["assignee_id"] else ""
        )
        snoozed = row.get("snoozed_until")
        row["snoozed_label"] = snooze_label(snoozed, today) if snoozed else ""


def _conversation_url_parts() -> tuple[str, str]:
    """inbox-conversation's URL around its id, reversed once per list."""
    sample = uuid.UUID(int=0)
    head, tail = reverse("inbox-conversation", args=[sample]).split(str(sample))
    return head, tail


def row_data(row: dict[str, Any]) -> tuple[Any, ...]:
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
            "snoozed_label",
        )
    )


# --- The open conversation: messages, notes and events ---------------------------------------------

_QUOTE_INTRO = re.compile(r"(wrote|schreef|schrieb|a écrit|escribió)\s*:\s*$", re.IGNORECASE)


def split_quote(text: str) -> tuple[str, str]:
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


def note_html(note: Note, viewer: User) -> SafeString:
    """The note's text, escaped, with the @mentions that named someone highlighted
    (the handles recorded when it was written: an ambiguous or unknown name is not)."""
    people = {str(person.pk): person for person in note.mentions.all()}
    handles = note.mention_handles or {}

    parts, last = [], 0
    for match in MENTION.finditer(note.text):
        if handles:
            person = people.get(handles.get(handle_key(match.group(1)), ""))
        else:  # written before the handles were recorded
            person = person_named(match.group(1), list(people.values()))
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


def _name(user: User | None) -> str:
    return user.display_name if user else "Someone"


def event_text(event: ConversationEvent) -> tuple[str, str]:
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
    elif event.kind == EventKind.SNOOZED:
        until = parse_datetime(str(detail.get("until") or ""))
        label = snooze_label(until) if until else "later"
        text = f"{_name(event.actor)} snoozed this until {label}"
    elif event.kind == EventKind.WOKE:
        text = (
            f"{_name(event.actor)} ended the snooze"
            if event.actor_id
            else f"Back in the open list: {detail.get('reason') or 'the snooze ended'}"
        )
        why = ""
    else:
        if event.actor_id:
            text = f"{_name(event.actor)} reopened this"
        elif detail.get("auto_reply"):
            text = "Reopened by an automatic reply (this inbox's setting)"
            why = ""
        else:
            text = "Reopened by the customer's reply"
            why = ""
    return text, why


def people_text(entries: list[dict[str, str]] | None) -> str:
    out = []
    for entry in entries or []:
        address = entry.get("address") or ""
        name = entry.get("name") or ""
        out.append(f"{name} <{address}>" if name and name != address else address)
    return ", ".join(out)


def bounce_line(message: Message) -> str:
    """A delivery report in one line: "Not delivered to ann@x.example: mailbox does not
    exist" (a delay or a success report says so instead)."""
    lines = []
    for recipient in (message.bounce or {}).get("recipients", []):
        address = recipient.get("address") or "a recipient"
        words = recipient.get("diagnostic") or recipient.get("status") or ""
        action = recipient.get("action") or "failed"
        if action == "delayed":
            lines.append(f"Delivery to {address} is delayed: {words}")
        elif action in ("delivered", "relayed", "expanded"):
            lines.append(f"Delivered to {address}")
        else:
            lines.append(f"Not delivered to {address}: {words}")
    return "; ".join(lines) or "A delivery report about this conversation's email"


def delivery_label(state: str) -> str:
    return state.capitalize()


def message_item(message: Message, *, user: User, remote: bool) -> dict[str, Any]:
    if message.kind == MessageKind.BOUNCE and message.bounce_of_id:
        # A report on an email of this conversation is a system line, not a message.
        return {
            "kind": "bounce",
            "at": message.sent_at or message.created_at,
            "message": message,
            "text": bounce_line(message),
            "report": message.text,
        }
    item: dict[str, Any] = {
        "kind": "message",
        "at": message.sent_at or message.created_at,
        "message": message,
        "sender": message.from_name or message.from_address or "(unknown sender)",
        "to": people_text(message.to),
        "cc": people_text(message.cc),
        "attachments": [a for a in message.attachments.all() if not shown_inline(a, message)],
        "outbound": message.direction == Direction.OUTBOUND,
        "auto_reply": message.kind == MessageKind.AUTO_REPLY,
        "bounce": bounce_line(message) if message.kind == MessageKind.BOUNCE else "",
        "blocked": 0,
    }
    # Sent from Postkamer (an outbox row) or reported on: a copy synced from the Sent
    # folder has no delivery to show otherwise.
    outbox = outbox_of(message)
    delivery = delivery_of(message)
    if delivery is not None and (outbox is not None or delivery["bounces"]):
        delivery["label"] = delivery_label(delivery["state"])
        item["delivery"] = delivery
    else:
        item["delivery"] = None
    item["held_until"] = held_until(outbox)
    if item["held_until"] is not None:
        item["held_label"] = held_label(item["held_until"])
    if message.html:
        item["frame"] = email_frame(message, user=user, remote=remote)
        item["blocked"] = item["frame"]["blocked"]
    else:
        body, quoted = split_quote(message.text)
        item["body_html"], item["quoted_html"] = linkify(body), linkify(quoted) if quoted else ""
    return item


def timeline(
    conversation: Conversation, *, user: User, remote: bool
) -> tuple[list[dict[str, Any]], int]:
    """Messages in their own order (Date), with notes and events placed by when they
    happened relative to the messages' arrival here: a sender's clock (and a Date
    header's whole seconds) cannot put a customer's answer before the close it
    answered."""
    messages = list(conversation.thread)
    arrived = [m.created_at for m in messages]
    others: list[tuple[int, datetime, int, dict]] = []
    for note in conversation.notes.all():
        item: dict[str, Any] = {
            "kind": "note",
            "at": note.created_at,
            "note": note,
            "html": note_html(note, user),
        }
        others.append((sum(a <= note.created_at for a in arrived), note.created_at, 0, item))
    for event in conversation.events.all():
        text, why = event_text(event)
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
        items.append(message_item(message, user=user, remote=remote))
    zone = timezone.get_current_timezone()
    today = timezone.now().astimezone(zone).date()
    for item in items:
        moment = item["at"].astimezone(zone)
        item["iso"] = moment.isoformat()
        item["when"] = local_label(moment, today)
        item["when_full"] = local_full_time(moment)
    return items, sum(item.get("blocked", 0) for item in items)


def shown_inline(attachment: Attachment, message: Message) -> bool:
    """An inline image the HTML body references is shown there, not listed."""
    return bool(
        attachment.content_id
        and message.html
        and f"cid:{attachment.content_id}".lower() in message.html.lower()
    )


def held_until(item: OutboxItem | None) -> datetime | None:
    """When a send limit lets a queued email go (None: it is not held back)."""
    if item is None or item.state != OutboxState.QUEUED:
        return None
    return item.held_until


def held_label(moment: datetime) -> str:
    """ "goes at 14:05" today, "goes on Tue 8 Dec at 09:00" another day (local time)."""
    local = timezone.localtime(moment)
    if local.date() == timezone.localdate():
        return f"goes at {local:%H:%M}"
    return f"goes on {local:%a} {local.day} {local:%b} at {local:%H:%M}"


def outbox_of(message: Message) -> OutboxItem | None:
    try:
        return message.outbox
    except OutboxItem.DoesNotExist:
        return None


def reply_preview(conversation: Conversation) -> dict[str, str]:
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
    return {"to": people_text(to), "others": people_text(others)}


# --- The right pane: the open conversation ---------------------------------------------------------


def conversation_context(
    conversation: Conversation, state: ListState, *, viewer: User
) -> dict[str, Any]:
    """The open conversation: its thread, header and actions, with the thread's version."""
    detail = conversation_detail(conversation)
    items, blocked = timeline(detail, user=viewer, remote=state.images)
    mailbox = detail.inbox.mailbox
    page_query = state.query(images="1" if state.images else "")
    return {
        "conversation": detail,
        "timeline": items,
        "blocked_images": blocked,
        "state": state,
        "images_query": state.query(images="1"),
        "next": reverse("inbox-conversation", args=[detail.pk]) + "?" + page_query,
        "thread_query": page_query,
        "version": loaded_thread_version(detail, state),
        "assignable": assignable_people(detail, viewer),
        "reply": reply_preview(detail),
        "from_line": (
            f"{detail.inbox.from_name} <{mailbox.address}>"
            if mailbox and detail.inbox.from_name
            else (mailbox.address if mailbox else "")
        ),
        "can_reply": bool(mailbox and mailbox.is_connected),
        "reply_banner": [banner] if (banner := mail_banner(mailbox, viewer=viewer)) else [],
        "saved_replies": saved_replies_of(detail.inbox),
        "snooze_presets": snooze_presets() if not detail.snoozed_until else [],
        "snoozed_label": snooze_label(detail.snoozed_until) if detail.snoozed_until else "",
        "poll": POLL,
    }


# --- Versions: has anything the thread shows changed? -----------------------------------------------


def thread_version(conversation: Conversation, state: ListState) -> str:
    """Changes whenever anything the thread or its header shows changes (the poll's
    check, from four small queries)."""
    return version_of(thread_state(conversation.pk), state)


def loaded_thread_version(detail: Conversation, state: ListState) -> str:
    """thread_version from what conversation_detail loaded already (no query)."""
    outbox = [m.outbox for m in detail.thread if outbox_of(m) is not None]
    notes = list(detail.notes.all())
    events = list(detail.events.all())
    data = [
        [tuple(getattr(detail, field) for field in VERSION_ROW)],
        sorted((item.pk, item.state, item.detail) for item in outbox),
        {"n": len(notes), "last": max((note.created_at for note in notes), default=None)},
        {"n": len(events), "last": max((event.id for event in events), default=None)},
    ]
    return version_of(data, state)


def version_of(data: list[Any], state: ListState) -> str:
    data += [token_window(), state.images]
    return hashlib.sha256(repr(data).encode()).hexdigest()[:16]
