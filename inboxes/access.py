"""Who may read a stored message: the products above the engine decide.

The engine stores each email once per account, but whether a person may read it
depends on where it shows: a conversation in an inbox the user can see
(conversations), a contact's timeline (crm). Each product registers a
``MessageReader`` in its ``AppConfig.ready()``; a message is readable when one of
them says so. Another account's message is never readable, whatever they say.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from inboxes.models import Message

# reader(user, message) -> True when ``user`` may read ``message`` (same account).
MessageReader = Callable[[Any, Message], bool]

message_readers: list[MessageReader] = []


def register_message_reader(reader: MessageReader) -> None:
    if reader not in message_readers:
        message_readers.append(reader)


def unregister_message_reader(reader: MessageReader) -> None:
    if reader in message_readers:
        message_readers.remove(reader)


def message_readable_by(user: Any, message: Message) -> bool:
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return False
    if message.account_id != user.account_id:
        return False
    return any(reader(user, message) for reader in message_readers)


def readable_message(user: Any, pk: Any) -> Message | None:
    """The message ``pk`` when ``user`` may read it, else None (unknown, another
    account's, or one the user cannot see: the caller answers 404 for all three)."""
    message = Message.objects.filter(pk=pk, account_id=user.account_id).first()
    if message is None or not message_readable_by(user, message):
        return None
    return message
