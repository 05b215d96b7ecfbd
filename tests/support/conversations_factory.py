"""Conversations without a mail server, through the same threading code as a sync."""

from __future__ import annotations

import hashlib
import itertools
from datetime import timedelta

from django.utils import timezone

from conversations.models import Conversation
from conversations.threading import thread_into_inbox
from inboxes.models import Direction, Inbox, Message

_n = itertools.count(1)


def make_message(
    inbox: Inbox,
    *,
    subject=None,
    sender="carol@customer.example.com",
    sender_name="Carol",
    text="Hello",
    html="",
    in_reply_to="",
    references=(),
    direction=Direction.INBOUND,
    minutes_ago=0,
) -> Message:
    n = next(_n)
    message_id = f"<m{n}@customer.example.com>"
    subject = subject if subject is not None else f"Question {n}"
    return Message.objects.create(
        account_id=inbox.account_id,
        dedupe_key=hashlib.sha256(message_id.encode()).hexdigest(),
        direction=direction,
        message_id=message_id,
        in_reply_to=in_reply_to,
        references=list(references),
        subject=subject,
        from_name=sender_name,
        from_address=sender,
        to=[{"name": "", "address": inbox.mailbox.address if inbox.mailbox_id else "x@x.example"}],
        sent_at=timezone.now() - timedelta(minutes=minutes_ago),
        text=text,
        html=html,
    )


def make_conversation(inbox: Inbox, *, messages=1, backfill=False, **kwargs) -> Conversation:
    first = make_message(inbox, minutes_ago=messages, **kwargs)
    thread_into_inbox(inbox, [first], backfill=backfill)
    previous = first
    for i in range(1, messages):
        reply = make_message(
            inbox,
            subject=f"Re: {first.subject}",
            in_reply_to=previous.message_id,
            references=[first.message_id],
            sender=first.from_address,
            minutes_ago=messages - i,
            text=f"Follow-up {i}",
        )
        thread_into_inbox(inbox, [reply], backfill=backfill)
        previous = reply
    return Conversation.objects.get(conversationmessage__message=first)
