"""The agent's helpers on the open conversation (/inbox/c/<id>/...): the people a note
may @mention (the note box's autocomplete), snoozing, and a saved reply filled in for
the composer. Thin: the rules are conversations/mentions.py, snooze.py and
saved_replies.py; the screen around them is conversations/inbox_views.py."""

from __future__ import annotations

import uuid

from django.http import JsonResponse
from django.shortcuts import get_object_or_404
from django.urls import path
from django.views.decorators.http import require_GET, require_POST

from conversations import snooze
from conversations.inbox_views import (
    InboxRequest,
    _acted,
    _failed,
    _login_required,
    _visible_conversation,
)
from conversations.mentions import mention_suggestions
from conversations.models import SavedReply
from conversations.saved_replies import saved_reply_render
from core.errors import DomainError


@_login_required
@require_GET
def mentionable(request: InboxRequest, pk: uuid.UUID) -> JsonResponse:
    """``{results: [{id, handle, name, email}]}``: who can see the conversation's inbox,
    those whose name or address starts with ``q`` first."""
    conversation = _visible_conversation(request, pk)
    query = request.GET.get("q", "")[:100]
    return JsonResponse({"results": mention_suggestions(conversation.inbox, query)})


@_login_required
@require_POST
def conversation_snooze(request: InboxRequest, pk: uuid.UUID):
    conversation = _visible_conversation(request, pk)
    try:
        if request.POST.get("action") == "wake":
            snooze.conversation_unsnooze(actor=request.user, conversation=conversation)
            done = "The conversation is back in the open list."
        else:
            until = snooze.snooze_moment(
                request.POST.get("preset", ""), request.POST.get("until", "")
            )
            snooze.conversation_snooze(actor=request.user, conversation=conversation, until=until)
            done = "Snoozed."
    except DomainError as exc:
        return _failed(request, conversation, exc, slot="action-error")
    return _acted(request, conversation, slot="action-error", done=done)


@_login_required
@require_GET
def saved_reply_text(request: InboxRequest, pk: uuid.UUID, reply: uuid.UUID) -> JsonResponse:
    """``{name, text}``: the inbox's saved reply with this conversation's values."""
    conversation = _visible_conversation(request, pk)
    saved = get_object_or_404(SavedReply, pk=reply, inbox_id=conversation.inbox_id)
    text = saved_reply_render(saved, conversation=conversation, agent=request.user)
    return JsonResponse({"name": saved.name, "text": text})


urlpatterns = [
    path("c/<uuid:pk>/mentionable/", mentionable, name="inbox-mentionable"),
    path("c/<uuid:pk>/snooze/", conversation_snooze, name="inbox-snooze"),
    path("c/<uuid:pk>/saved-replies/<uuid:reply>/", saved_reply_text, name="inbox-saved-reply"),
]
