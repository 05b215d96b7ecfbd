"""Routing of new conversations (R9).

The mail engine calls ``conversation_route`` for every conversation it opens.
The routing rules themselves (assign to users or a team, round-robin) come with
the conversations issue; until then a new conversation stays unassigned, which
is what an inbox without rules does.
"""

from __future__ import annotations

from conversations.models import Conversation


def conversation_route(conversation: Conversation, *, notify: bool) -> None:
    """Apply the inbox's routing rules. ``notify`` is False for imported history:
    old mail is filed but never triggers assignments, notifications or auto-replies."""
    return None
