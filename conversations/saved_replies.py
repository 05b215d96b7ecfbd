"""Saved replies: per inbox, kept by admins on the inbox's settings, inserted from the
composer with their variables ({{customer.first_name}}, {{agent.first_name}},
{{inbox.name}} ...) filled in for the conversation and the agent."""

from __future__ import annotations

import re
from typing import Any

from django.db import IntegrityError, transaction

from accounts.models import User
from audit.services import audit_record
from conversations.models import Conversation, SavedReply
from core.errors import Invalid
from inboxes import rules
from inboxes.models import Inbox

VARIABLES = {
    "customer.first_name": "the customer's first name",
    "customer.name": "the customer's name",
    "customer.email": "the customer's address",
    "agent.first_name": "your first name",
    "agent.name": "your name",
    "inbox.name": "the inbox's name",
}
_VARIABLE = re.compile(r"\{\{\s*([\w.]+)\s*\}\}")


def check_saved_reply(name: str, body: str) -> tuple[str, str]:
    """A saved reply's name (one line) and body, whose variables must be known ones."""
    name = " ".join((name or "").split())
    body = (body or "").strip()
    if not name:
        raise Invalid("Give the saved reply a name.", errors={"name": ["This field is required."]})
    if len(name) > 100:
        raise Invalid(
            "The name is too long: use at most 100 characters.",
            errors={"name": ["At most 100 characters."]},
        )
    if not body:
        raise Invalid("Write the saved reply's text.", errors={"body": ["This field is required."]})
    if len(body) > 20_000:
        raise Invalid(
            "The text is too long: use at most 20000 characters.",
            errors={"body": ["At most 20000 characters."]},
        )
    unknown = sorted({m.group(1) for m in _VARIABLE.finditer(body)} - set(VARIABLES))
    if unknown:
        known = ", ".join("{{" + key + "}}" for key in VARIABLES)
        raise Invalid(
            f"Unknown variable {{{{{unknown[0]}}}}}. Use one of {known}.",
            errors={"body": [f"Unknown variable {{{{{unknown[0]}}}}}."]},
        )
    return name, body


def _first(name: str) -> str:
    return name.split()[0] if name.strip() else ""


def saved_reply_values(conversation: Conversation, agent: User) -> dict[str, str]:
    contact: Any = conversation.contact
    customer_name = (contact.name if contact is not None else "") or conversation.customer_name
    return {
        "customer.first_name": _first(customer_name),
        "customer.name": customer_name,
        "customer.email": conversation.customer_address,
        "agent.first_name": _first(agent.full_name) or agent.email.split("@")[0],
        "agent.name": agent.display_name,
        "inbox.name": conversation.inbox.name,
    }


def saved_reply_render(reply: SavedReply, *, conversation: Conversation, agent: User) -> str:
    """The saved reply's text for this conversation and agent (an unknown value is
    left empty)."""
    values = saved_reply_values(conversation, agent)
    return _VARIABLE.sub(lambda m: values.get(m.group(1), ""), reply.body)


def saved_replies_of(inbox: Inbox) -> list[SavedReply]:
    return list(SavedReply.objects.filter(inbox=inbox).order_by("name"))


def saved_reply_save(
    *, actor: User, inbox: Inbox, name: str, body: str, reply: SavedReply | None = None
) -> SavedReply:
    """Add a saved reply to the inbox, or change ``reply``."""
    rules.check_admin(actor, "change saved replies")
    if inbox.account_id != actor.account_id or (reply is not None and reply.inbox_id != inbox.pk):
        raise Invalid("Unknown inbox.")
    name, body = check_saved_reply(name, body)
    try:
        with transaction.atomic():
            if reply is None:
                reply = SavedReply.objects.create(inbox=inbox, name=name, body=body)
                action = "saved_reply.created"
            else:
                reply.name, reply.body = name, body
                reply.save()
                action = "saved_reply.updated"
            audit_record(
                account=actor.account, actor=actor, action=action, target=inbox, data={"name": name}
            )
    except IntegrityError:
        raise Invalid(
            f"This inbox already has a saved reply called {name}.",
            errors={"name": ["A saved reply with this name exists."]},
        ) from None
    return reply


def saved_reply_delete(*, actor: User, reply: SavedReply) -> None:
    rules.check_admin(actor, "change saved replies")
    if reply.inbox.account_id != actor.account_id:
        raise Invalid("Unknown saved reply.")
    with transaction.atomic():
        audit_record(
            account=actor.account,
            actor=actor,
            action="saved_reply.deleted",
            target=reply.inbox,
            data={"name": reply.name},
        )
        reply.delete()
