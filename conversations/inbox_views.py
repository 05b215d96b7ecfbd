"""The support team's daily screen, /inbox/: views and inboxes, the conversation
list, and the open conversation with its thread, notes, events and actions.

Server-rendered with htmx for navigation, polling and actions; every link and
form also works as a plain page without JavaScript. Visibility is enforced by
the selectors (conversations_visible_to); writes go through the services in
conversations/handling.py. The list's URL state is conversations/inbox_state.py,
what a row and a conversation show is conversations/presenters.py, and the
files (attachments, an email frame's stylesheet) are conversations/downloads.py.

Email bodies are shown in ``<iframe sandbox srcdoc>`` (no allow-scripts, no
allow-same-origin). A srcdoc document inherits the page's Content-Security-
Policy, so the email's inline ``style`` attributes would be refused there; they
are moved into a per-message stylesheet served from this origin (frame_css).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.urls import path, reverse
from django.utils import timezone
from django.utils.cache import patch_vary_headers
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_GET, require_POST
from django_htmx.middleware import HtmxDetails

from accounts.auth import AuthenticatedHttpRequest
from accounts.models import User
from accounts.selectors import users_visible_to
from conversations import contact_links, handling
from conversations.composer import check_attachment_size
from conversations.downloads import attachment_download, frame_css
from conversations.inbox_state import (
    VIEWS,
    ListState,
    cursor,
    cursor_key,
    list_state,
    list_state_from_post,
)
from conversations.mail_banner import inbox_banners
from conversations.models import Conversation, SavedReply
from conversations.new_email_views import new_email
from conversations.presenters import (
    POLL,
    conversation_context,
    nav_panel,
    present_rows,
    row_data,
    thread_version,
)
from conversations.saved_replies import saved_reply_render
from conversations.selectors import conversation_rows, conversations_to_show
from core.errors import DomainError, Invalid
from core.web import back_to, report
from inboxes.outbox import Attachment

PAGE_SIZE = 50
MAX_ROWS = 500


class InboxRequest(AuthenticatedHttpRequest):
    """A request of these views: signed in (_login_required), through django-htmx's
    middleware."""

    htmx: HtmxDetails


# --- The middle pane: the conversation list ---------------------------------------------------------


def _rows(user: User, state: ListState) -> tuple[list[dict[str, Any]], bool]:
    """One query whatever the number of rows or how deep the page is: a keyset
    cursor (``after``) starts the scan at its row, the customer's name and the
    snippet are stored on the conversation. Plain values, no model instances:
    the rows are only shown.

    Without ``upto``: a page of PAGE_SIZE rows. With it (the first page's poll once
    pages were appended below): every row down to that one, so that no row falls
    into a gap between the first page and the appended ones."""
    limit = MAX_ROWS if state.upto else PAGE_SIZE
    rows = conversation_rows(
        user,
        view="" if state.q else state.view,
        inbox=state.inbox,
        search=state.q,
        after=cursor_key(state.after) if state.after else None,
        down_to=cursor_key(state.upto) if state.upto else None,
        limit=limit + 1,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    present_rows(rows)
    return rows, more


def _list_context(request: InboxRequest, state: ListState) -> dict[str, Any]:
    """The list's first page (or, with ``upto``, its rows down to the appended pages)
    and the left pane, with a version of what they show: the poll compares versions
    before anything is rendered."""
    rows, more = _rows(request.user, state)
    # With upto there are appended pages, which carry "Show more": the same version as
    # the first page had when "Show more" was clicked, so an unchanged poll stays 204.
    more = True if state.upto else more
    nav = nav_panel(request.user, state)
    version_data = [
        state.query(),
        timezone.localdate(),  # the time labels change at midnight
        request.user.is_admin,
        more,
        [row_data(row) for row in rows],
        [(view["key"], view["count"]) for view in nav["views"]],
        [(entry["pk"], entry["name"], entry["count"]) for entry in nav["inboxes"]],
    ]
    return {
        "state": state,
        "rows": rows,
        "more": more and not state.upto,
        "more_query": state.query(after=cursor(rows[-1])) if rows else "",
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


def _render_list(
    request: InboxRequest, context: dict[str, Any], template: str = "inbox/_list.html"
) -> tuple[str, str]:
    """The list (whole, or its polled first page) and the left pane."""
    list_html = render_to_string(template, context, request=request)
    nav_html = render_to_string("inbox/_nav.html", context, request=request)
    return list_html, nav_html


def _next_page(request: InboxRequest, state: ListState) -> HttpResponse:
    """ "Show more": the page of rows after ``state.after``, appended below the list by
    htmx, and the next "Show more" out of band. Its cost does not depend on depth."""
    rows, more = _rows(request.user, state)
    context = {
        "state": state,
        "rows": rows,
        "more": more,
        "more_query": state.query(after=cursor(rows[-1])) if rows else "",
        "row_query": state.query(),
        "oob": True,
    }
    response = render(request, "inbox/_page_rows.html", context)
    patch_vary_headers(response, ["HX-Request"])
    return response


def _visible_conversation(request: InboxRequest, pk: uuid.UUID) -> Conversation:
    return get_object_or_404(conversations_to_show(request.user), pk=pk)


_View = TypeVar("_View", bound=Callable[..., HttpResponseBase])


def _login_required(view: _View) -> _View:
    """login_required, but an htmx request (a poll whose session ended) is sent to
    the login page as a whole page rather than getting it swapped into a pane."""
    plain = login_required(view)

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        htmx = getattr(request, "htmx", None)
        if not request.user.is_authenticated and htmx:
            back = htmx.current_url_abs_path or reverse("inbox")
            response = HttpResponse(status=204)
            response["HX-Redirect"] = f"{reverse('login')}?{urlencode({'next': back})}"
            return response
        return plain(request, *args, **kwargs)

    return cast(_View, wrapper)


# --- Pages ---------------------------------------------------------------------------------------------


def _page(
    request: InboxRequest,
    state: ListState,
    conversation: Conversation | None = None,
    **extra: Any,
) -> HttpResponse:
    list_html, nav_html = _render_list(request, _list_context(request, state))
    context = {
        "section": "inbox",
        "state": state,
        "list_html": mark_safe(list_html),  # noqa: S308 - rendered templates
        "nav_html": mark_safe(nav_html),  # noqa: S308
        "available": request.user.is_available,
        "mail_banners": inbox_banners(request.user, state.inbox),
        "conversation": None,
        "next": request.get_full_path(),
    }
    if conversation is not None:
        context.update(conversation_context(conversation, state, viewer=request.user))
    context.update(extra)
    response = render(request, "inbox/page.html", context)
    patch_vary_headers(response, ["HX-Request", "HX-Target"])
    return response


def _partial_target(request: InboxRequest) -> str | None:
    htmx = getattr(request, "htmx", None)
    if not htmx or htmx.history_restore_request:
        return None
    return htmx.target


@_login_required
@require_GET
def inbox(request: InboxRequest) -> HttpResponse:
    """The screen: views, the list, and (nothing open yet) a hint."""
    state = list_state(request)
    if _partial_target(request) == "conv-list":
        return inbox_list(request)
    return _page(request, state)


@_login_required
@require_GET
def inbox_list(request: InboxRequest) -> HttpResponse:
    """The list (and the left pane's counts, out of band). A poll (``v``) gets 204
    when nothing it shows changed, decided before anything is rendered, else only
    the first page; ``after`` (htmx) is "Show more": the next page only."""
    state = list_state(request)
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
def conversation_page(request: InboxRequest, pk: uuid.UUID) -> HttpResponse:
    """One conversation: the whole page, or only the right pane for htmx. Viewing
    it marks it read. ``images=1`` also loads remote images, with a CSP to match."""
    state = list_state(request)
    conversation = _visible_conversation(request, pk)
    handling.conversation_mark_read(user=request.user, conversation=conversation)
    if _partial_target(request) == "conversation-pane":
        response = render(
            request,
            "inbox/_conversation.html",
            conversation_context(conversation, state, viewer=request.user),
        )
        patch_vary_headers(response, ["HX-Request", "HX-Target"])
    else:
        response = _page(
            request, state, conversation, reply_prefill=_saved_reply_prefill(request, conversation)
        )
    if state.images:
        # django-csp 4's per-response update (what @csp_update sets), read by its
        # middleware: an attribute HttpResponse's stubs do not know.
        response._csp_update = {"img-src": ["https:", "http:"]}  # type: ignore[attr-defined]
    return response


def _saved_reply_prefill(request: InboxRequest, conversation: Conversation) -> str:
    """``?saved_reply=<id>`` (the composer's saved replies without JavaScript): its text
    for this conversation, in the reply box."""
    wanted = request.GET.get("saved_reply", "")
    try:
        reply = SavedReply.objects.get(pk=uuid.UUID(wanted), inbox_id=conversation.inbox_id)
    except (ValueError, SavedReply.DoesNotExist):
        return ""
    return saved_reply_render(reply, conversation=conversation, agent=request.user)


@_login_required
@require_GET
def conversation_thread(request: InboxRequest, pk: uuid.UUID) -> HttpResponse:
    """The thread (and the header, out of band) for the poller; 204 if unchanged."""
    state = list_state(request)
    conversation = _visible_conversation(request, pk)
    if request.GET.get("v") == thread_version(conversation, state):
        return HttpResponse(status=204)
    handling.conversation_mark_read(user=request.user, conversation=conversation)
    return _thread_response(request, conversation, state)


def _thread_response(
    request: InboxRequest, conversation: Conversation, state: ListState, **extra: Any
) -> HttpResponse:
    context = conversation_context(conversation, state, viewer=request.user)
    context.update(extra)
    response = render(request, "inbox/_thread_update.html", context)
    patch_vary_headers(response, ["HX-Request"])
    return response


# --- Actions -------------------------------------------------------------------------------------------


def _acted(
    request: InboxRequest,
    conversation: Conversation,
    *,
    slot: str,
    reset: bool = False,
    done: str = "",
) -> HttpResponse:
    """After a successful action: the fresh thread and header for htmx, else back
    to the page."""
    state = list_state_from_post(request)
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


def _failed(
    request: InboxRequest, conversation: Conversation, exc: DomainError, *, slot: str
) -> HttpResponse:
    if not request.htmx:
        report(request, exc)
        return back_to(request, reverse("inbox-conversation", args=[conversation.pk]))
    response = render(request, "inbox/_error.html", {"slot": slot, "error": exc.detail})
    response["HX-Retarget"] = f"#{slot}"
    response["HX-Reswap"] = "outerHTML"
    return response


@_login_required
@require_POST
def conversation_reply(request: InboxRequest, pk: uuid.UUID) -> HttpResponse:
    conversation = _visible_conversation(request, pk)
    try:
        files = request.FILES.getlist("attachments")
        # The size is known before a file is read: a too-large set is refused unread.
        check_attachment_size(sum(f.size or 0 for f in files))
        attachments = [
            Attachment(
                filename=f.name or "attachment",
                content_type=f.content_type or "application/octet-stream",
                data=f.read(),
            )
            for f in files
        ]
        with transaction.atomic():
            handling.conversation_reply(
                actor=request.user,
                conversation=conversation,
                text=request.POST.get("text", ""),
                html=request.POST.get("html", ""),
                reply_all=request.POST.get("reply_all") == "1",
                cc=request.POST.get("cc", ""),
                bcc=request.POST.get("bcc", ""),
                attachments=attachments,
            )
    except DomainError as exc:
        return _failed(request, conversation, exc, slot="reply-error")
    return _acted(request, conversation, slot="reply-error", reset=True, done="Reply queued.")


@_login_required
@require_POST
def conversation_note(request: InboxRequest, pk: uuid.UUID) -> HttpResponse:
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
def conversation_assign(request: InboxRequest, pk: uuid.UUID) -> HttpResponse:
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
def conversation_status(request: InboxRequest, pk: uuid.UUID) -> HttpResponse:
    conversation = _visible_conversation(request, pk)
    status = request.POST.get("status", "")
    try:
        handling.conversation_set_status(
            actor=request.user, conversation=conversation, status=status
        )
    except DomainError as exc:
        return _failed(request, conversation, exc, slot="action-error")
    if status == "closed":
        return _to_next(request, conversation)
    return _acted(request, conversation, slot="action-error", done="Conversation reopened.")


def next_conversation_url(user: User, conversation: Conversation, state: ListState) -> str:
    """Where closing a conversation leads: the row below it in the list the agent was
    working (its view, inbox and search), else the top row, else the list itself."""
    query = state.query(after="")
    suffix = "?" + query if query else ""
    view = "" if state.q else state.view
    place = (conversation.last_message_at, conversation.pk)
    rows = conversation_rows(
        user, view=view, inbox=state.inbox, search=state.q, after=place, limit=1
    )
    if not rows:
        top = conversation_rows(user, view=view, inbox=state.inbox, search=state.q, limit=2)
        rows = [row for row in top if row["id"] != conversation.pk]
    if rows:
        return reverse("inbox-conversation", args=[rows[0]["id"]]) + suffix
    return reverse("inbox") + suffix


def _to_next(request: InboxRequest, conversation: Conversation) -> HttpResponse:
    """Closed: on to the next conversation of the list (htmx swaps the whole screen,
    as a view's link does, and pushes its URL)."""
    url = next_conversation_url(request.user, conversation, list_state_from_post(request))
    if not request.htmx:
        messages.success(request, "Conversation closed.")
        return redirect(url)
    response = HttpResponse(status=204)
    response["HX-Location"] = json.dumps(
        {"path": url, "target": "#inbox-app", "select": "#inbox-app", "swap": "outerHTML"}
    )
    return response


@_login_required
@require_POST
def conversation_make_contact(request: InboxRequest, pk: uuid.UUID) -> HttpResponse:
    """One click: the customer becomes a CRM contact, linked to the conversation."""
    conversation = _visible_conversation(request, pk)
    try:
        contact = contact_links.conversation_make_contact(
            actor=request.user, conversation=conversation
        )
    except DomainError as exc:
        return _failed(request, conversation, exc, slot="action-error")
    done = f"{contact.name or contact.email} is a contact now."
    return _acted(request, conversation, slot="action-error", done=done)


@_login_required
@require_POST
def availability(request: InboxRequest) -> HttpResponse:
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
    path("c/<uuid:pk>/contact/", conversation_make_contact, name="inbox-make-contact"),
    path("new/", new_email, name="inbox-new"),
    path("attachments/<uuid:pk>/", attachment_download, name="inbox-attachment"),
    path("messages/<uuid:pk>/frame.css", frame_css, name="inbox-frame-css"),
]
