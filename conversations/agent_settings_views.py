"""Settings > Inboxes > <inbox> > Agents' replies (admins): whether replying takes an
unassigned conversation (``assign_on_reply``), and the inbox's saved replies. Thin: the
rules are conversations/services.py ``inbox_update`` and conversations/saved_replies.py."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path
from django.views.decorators.http import require_GET, require_POST

from accounts.auth import AuthenticatedHttpRequest
from conversations import services
from conversations.models import SavedReply
from conversations.saved_replies import (
    VARIABLES,
    saved_replies_of,
    saved_reply_delete,
    saved_reply_save,
)
from core.api import client_ip
from core.errors import DomainError
from core.web import admin_required
from inboxes.models import Inbox
from inboxes.selectors import inboxes_visible_to


def _inbox(request: AuthenticatedHttpRequest, pk: UUID) -> Inbox:
    return get_object_or_404(inboxes_visible_to(request.user), pk=pk)


def _page(
    request: AuthenticatedHttpRequest,
    inbox: Inbox,
    *,
    editing: dict[str, Any] | None = None,
    error: str = "",
    status: int = 200,
) -> HttpResponse:
    return render(
        request,
        "conversations/agent_replies.html",
        {
            "section": "inboxes",
            "inbox": inbox,
            "saved_replies": saved_replies_of(inbox),
            "variables": ["{{" + key + "}}" for key in VARIABLES],
            "variable_help": [("{{" + key + "}}", words) for key, words in VARIABLES.items()],
            "editing": editing or {},
            "error": error,
        },
        status=status,
    )


@admin_required
@require_GET
def agent_replies(request: AuthenticatedHttpRequest, pk: UUID) -> HttpResponse:
    return _page(request, _inbox(request, pk))


@admin_required
@require_POST
def assign_on_reply(request: AuthenticatedHttpRequest, pk: UUID) -> HttpResponse:
    inbox = _inbox(request, pk)
    on = request.POST.get("assign_on_reply") == "1"
    services.inbox_update(
        actor=request.user, inbox=inbox, assign_on_reply=on, ip=client_ip(request)
    )
    messages.success(
        request,
        f"Inbox {inbox.name}: replying to an unassigned conversation "
        + ("assigns it to whoever replied." if on else "leaves it unassigned."),
    )
    return redirect("settings-inbox-agent-replies", pk=inbox.pk)


@admin_required
@require_POST
def saved_reply_post(
    request: AuthenticatedHttpRequest, pk: UUID, reply: UUID | None = None
) -> HttpResponse:
    """Add (no ``reply``), change or (``delete``) remove a saved reply."""
    inbox = _inbox(request, pk)
    saved = get_object_or_404(SavedReply, pk=reply, inbox=inbox) if reply else None
    posted = {
        "pk": str(reply or ""),
        "name": request.POST.get("name", ""),
        "body": request.POST.get("body", ""),
    }
    try:
        if saved is not None and request.POST.get("delete") == "1":
            saved_reply_delete(actor=request.user, reply=saved)
            messages.success(request, f"Saved reply “{saved.name}” deleted.")
        else:
            saved = saved_reply_save(
                actor=request.user,
                inbox=inbox,
                name=posted["name"],
                body=posted["body"],
                reply=saved,
            )
            messages.success(request, f"Saved reply “{saved.name}” saved.")
    except DomainError as exc:
        return _page(request, inbox, editing=posted, error=exc.detail, status=exc.status)
    return redirect("settings-inbox-agent-replies", pk=inbox.pk)


urlpatterns = [
    path("agent-replies/", agent_replies, name="settings-inbox-agent-replies"),
    path("assign-on-reply/", assign_on_reply, name="settings-inbox-assign-on-reply"),
    path("saved-replies/", saved_reply_post, name="settings-inbox-saved-reply-add"),
    path("saved-replies/<uuid:reply>/", saved_reply_post, name="settings-inbox-saved-reply"),
]
