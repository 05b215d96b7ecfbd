"""Working a conversation: reply, assign, close and reopen, notes, read state.

Every function checks that the actor can see the conversation (inbox
visibility), writes in one transaction and records what happened.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.core.files.storage import default_storage
from django.db import models, transaction
from django.utils import timezone

from accounts.models import User
from audit.services import audit_record
from conversations.composer import check_attachments, extra_recipients, formatted_body
from conversations.contact_links import timeline_for_filed
from conversations.mentions import check_can_be_mentioned, mentions_in
from conversations.models import (
    Conversation,
    ConversationEvent,
    ConversationMessage,
    ConversationStatus,
    EventKind,
    Note,
    ReadState,
)
from conversations.notices import notify_assigned, notify_mentions
from conversations.routing import conversation_route
from conversations.selectors import conversations_visible_to
from conversations.summary import conversation_summaries_refresh
from core.errors import Invalid
from core.text import one_line
from inboxes import rules
from inboxes.models import Direction, Tombstone
from inboxes.outbox import Attachment, Recipient, outbox_create

# --- Replies -------------------------------------------------------------------------------------

QUOTE_MAX_LINES = 200


def signature_blocks(signature: str) -> tuple[str, str]:
    """The inbox's signature as it goes below a message the team writes: the text
    block (after the "-- " separator line) and the HTML one; both "" without one."""
    from django.utils.html import escape, linebreaks

    if not signature.strip():
        return "", ""
    return "-- \n" + signature.strip(), linebreaks(escape(signature.strip()))


def compose_reply(text: str, html: str, *, signature: str, quoted) -> tuple[str, str]:
    """The reply with the inbox's signature and the last message quoted below it."""
    from django.utils.html import escape, linebreaks

    when = quoted.sent_at or quoted.created_at
    sender = (
        f"{quoted.from_name} <{quoted.from_address}>" if quoted.from_name else quoted.from_address
    )
    intro = f"On {when:%a, %d %b %Y at %H:%M}, {sender} wrote:"
    quote_lines = (quoted.text or "").splitlines()[:QUOTE_MAX_LINES]
    signature_text, signature_html = signature_blocks(signature)
    parts = [text.rstrip()]
    if signature_text:
        parts.append(signature_text)
    parts.append(intro + "\n" + "\n".join(f"> {line}".rstrip() for line in quote_lines))
    full_text = "\n\n".join(parts) + "\n"
    if not html:
        return full_text, ""
    quoted_html = quoted.html or linebreaks(escape(quoted.text or ""))
    full_html = (
        f"{html}{signature_html}<p>{escape(intro)}</p>"
        f'<blockquote type="cite">{quoted_html}</blockquote>'
    )
    return full_text, full_html


def conversation_reply(
    *,
    actor: User,
    conversation,
    text: str,
    html: str = "",
    reply_all: bool = False,
    cc: str | Sequence[str] = (),
    bcc: str | Sequence[str] = (),
    attachments: Sequence[Attachment] = (),
):
    """Reply from the inbox's team address with its from-name (R9).

    The reply (with In-Reply-To and References of the last message) and its
    outbox row are written in one transaction; the send happens after commit.
    ``html`` (the composer's formatting) is sanitised, and the text part made from
    it when ``text`` is empty; ``cc`` and ``bcc`` add recipients (Bcc only on the
    envelope, never in a header); ``attachments`` go with it, refused before anything
    is queued when they pass ATTACHMENT_MAX_BYTES together. An unassigned conversation becomes the replier's
    when its inbox says so (``assign_on_reply``). Returns the outbound Message,
    which is in the thread at once.
    """

    _check_can_work(actor, conversation)
    inbox = conversation.inbox
    mailbox = inbox.mailbox
    if mailbox is None or not mailbox.is_connected:
        raise Invalid("This inbox has no connected team email to reply from.")
    text, html = formatted_body(text, html)
    check_attachments(attachments)
    if not (text or "").strip():
        raise Invalid("The reply is empty.", errors={"text": ["This field is required."]})
    last = conversation.messages.order_by("-sent_at", "-created_at").first()
    if last is None:
        raise Invalid("There is nothing to reply to in this conversation.")
    team = mailbox.canonical_address
    last_inbound = (
        conversation.messages.filter(direction=Direction.INBOUND)
        .order_by("-sent_at", "-created_at")
        .first()
    ) or last

    def others(entries) -> list[Recipient]:
        return [
            Recipient(e["address"], e.get("name", ""))
            for e in entries
            if e.get("address") and e["address"].lower() != team
        ]

    if last_inbound.direction == Direction.INBOUND:
        to = [Recipient(last_inbound.from_address, last_inbound.from_name)]
    else:
        to = others(last_inbound.to)
    cc_typed = cc
    copies: list[Recipient] = []
    if reply_all:
        seen = {r.address.lower() for r in to}
        for recipient in others(last_inbound.to) + others(last_inbound.cc):
            if recipient.address.lower() not in seen:
                seen.add(recipient.address.lower())
                copies.append(recipient)
    if not to:
        raise Invalid("There is nobody to reply to in this conversation.")
    seen = {r.address.lower() for r in [*to, *copies]}
    for address in extra_recipients(cc_typed, field="cc", label="Cc", team_address=team):
        if address.lower() not in seen:
            seen.add(address.lower())
            copies.append(Recipient(address, ""))
    blind = [
        address
        for address in extra_recipients(bcc, field="bcc", label="Bcc", team_address=team)
        if address.lower() not in seen
    ]
    subject = last.subject or conversation.subject
    if subject and not subject.lower().startswith("re:"):
        subject = f"Re: {subject}"
    text, html = compose_reply(text, html, signature=inbox.signature, quoted=last)
    with transaction.atomic():
        item = outbox_create(
            mailbox=mailbox,
            # One line even if stored before inbox_update refused line breaks.
            from_name=one_line(inbox.from_name),
            to=to,
            cc=copies,
            subject=subject,
            text=text,
            html=html,
            in_reply_to=last.message_id,
            references=[*last.references, last.message_id],
            bcc=[Recipient(address, "") for address in blind],
            attachments=attachments,
        )
        link = ConversationMessage.objects.create(
            inbox=inbox, conversation=conversation, message=item.message
        )
        if inbox.assign_on_reply and conversation.assignee_id is None:
            _assign_on_reply(actor, conversation)
        # As stored now: the conversation may have been linked since it was read.
        conversation.contact_id = (
            Conversation.objects.filter(pk=conversation.pk)
            .values_list("contact_id", flat=True)
            .first()
        )
        timeline_for_filed([link], inbox_name=inbox.name)
        now = timezone.now()
        Conversation.objects.filter(pk=conversation.pk).update(
            message_count=models.F("message_count") + 1, last_message_at=now
        )
        Conversation.objects.filter(pk=conversation.pk, first_response_at__isnull=True).update(
            first_response_at=now
        )
        conversation_summaries_refresh([conversation.pk])
        audit_record(
            account=inbox.account,
            actor=actor,
            action="conversation.replied",
            target=conversation,
            data={"outbox": str(item.pk), **({"bcc": blind} if blind else {})},
        )
    return item.message


def _assign_on_reply(actor: User, conversation) -> None:
    """The replier takes an unassigned conversation; a conditional UPDATE, so an
    assignment made since the conversation was read is kept."""
    taken = Conversation.objects.filter(pk=conversation.pk, assignee__isnull=True).update(
        assignee=actor, updated_at=timezone.now()
    )
    if taken:
        ConversationEvent.objects.create(
            conversation=conversation,
            kind=EventKind.ASSIGNED,
            actor=actor,
            assignee=actor,
            detail={"by": actor.display_name, "reason": "replied"},
        )
        conversation.assignee = actor


def message_delete(*, actor: User, message) -> None:
    """Delete an email from Postkamer for good: it leaves a tombstone, so no later
    sync (or resync) of any mailbox of the account imports it again."""

    rules.check_admin(actor, "delete an email")
    if message.account_id != actor.account_id:
        raise Invalid("Unknown message.")
    with transaction.atomic():
        Tombstone.objects.get_or_create(
            account_id=message.account_id, dedupe_key=message.dedupe_key
        )
        audit_record(
            account=actor.account,
            actor=actor,
            action="message.deleted",
            target_repr=message.subject[:300],
            data={"message_id": message.message_id},
        )
        if hasattr(message, "outbox"):
            raise Invalid("An email Postkamer sent stays in the thread.")
        holders = list(message.conversations.values_list("pk", flat=True))
        Conversation.objects.filter(pk__in=holders).update(
            message_count=models.F("message_count") - 1, updated_at=timezone.now()
        )
        files = [message.raw.name, *(a.file.name for a in message.attachments.all())]
        message.delete()
        conversation_summaries_refresh(holders)  # from the messages that are left

        def delete_files() -> None:
            for name in files:
                if name:
                    default_storage.delete(name)

        transaction.on_commit(delete_files)


# --- Working a conversation ---------------------------------------------------------------------


def _check_can_work(actor: User, conversation) -> None:

    if not conversations_visible_to(actor).filter(pk=conversation.pk).exists():
        raise Invalid("Unknown conversation.")


def conversation_assign(*, actor: User, conversation, assignee: User | None) -> None:
    """Assign, reassign or unassign (``assignee`` None) by hand."""

    _check_can_work(actor, conversation)
    if assignee is not None:
        if assignee.account_id != actor.account_id:
            raise Invalid("Unknown user.", errors={"assignee": ["Unknown user."]})
        if not assignee.is_active:
            raise Invalid(
                f"{assignee.display_name} is deactivated.",
                errors={"assignee": ["This user is deactivated."]},
            )
        if not conversations_visible_to(assignee).filter(pk=conversation.pk).exists():
            raise Invalid(
                f"{assignee.display_name} cannot see the inbox {conversation.inbox.name}.",
                errors={"assignee": ["This user cannot see this inbox."]},
            )
    if conversation.assignee_id == (assignee.pk if assignee else None):
        return
    with transaction.atomic():
        Conversation.objects.filter(pk=conversation.pk).update(
            assignee=assignee, updated_at=timezone.now()
        )
        event = ConversationEvent.objects.create(
            conversation=conversation,
            kind=EventKind.ASSIGNED if assignee else EventKind.UNASSIGNED,
            actor=actor,
            assignee=assignee,
            detail={"by": actor.display_name},
        )
        if assignee is not None:
            notify_assigned(conversation, assignee, actor=actor, event_id=event.pk)
    conversation.assignee = assignee


def conversation_set_status(*, actor: User, conversation, status: str) -> None:

    _check_can_work(actor, conversation)
    if status not in ConversationStatus.values:
        raise Invalid("Unknown status.", errors={"status": ['Use "open" or "closed".']})
    if conversation.status == status:
        return
    closing = status == ConversationStatus.CLOSED
    now = timezone.now()
    with transaction.atomic():
        # Closing ends a snooze: the conversation is not waiting for anything any more.
        ended = {"snoozed_until": None} if closing else {}
        Conversation.objects.filter(pk=conversation.pk).update(
            status=status, closed_at=now if closing else None, updated_at=now, **ended
        )
        ConversationEvent.objects.create(
            conversation=conversation,
            kind=EventKind.CLOSED if closing else EventKind.REOPENED,
            actor=actor,
        )
    conversation.status = status


def note_create(*, actor: User, conversation, text: str):
    """An internal note; the teammates it @mentions are recorded and notified. A
    mention of someone who cannot see the inbox refuses the note
    (conversations/mentions.py)."""

    _check_can_work(actor, conversation)
    if not (text or "").strip():
        raise Invalid("The note is empty.", errors={"text": ["This field is required."]})
    named = mentions_in(text, account_id=actor.account_id)
    check_can_be_mentioned(named.values(), conversation.inbox)
    with transaction.atomic():
        note = Note.objects.create(
            conversation=conversation,
            author=actor,
            text=text.strip(),
            mention_handles={handle: str(user.pk) for handle, user in named.items()},
        )
        note.mentions.set({user.pk: user for user in named.values()}.values())
        notify_mentions(note, actor)
    return note


def conversation_mark_read(*, user: User, conversation) -> None:
    """One INSERT ... ON CONFLICT DO UPDATE on every view, instead of a locking
    SELECT and an UPDATE."""
    ReadState.objects.bulk_create(
        [ReadState(conversation_id=conversation.pk, user_id=user.pk, read_at=timezone.now())],
        update_conflicts=True,
        unique_fields=["conversation", "user"],
        update_fields=["read_at"],
    )


def conversations_reroute_for(*, user: User) -> int:
    """A deactivated assignee's open conversations go back to routing."""

    open_ones = list(Conversation.objects.filter(assignee=user, status=ConversationStatus.OPEN))
    for conversation in open_ones:
        with transaction.atomic():
            Conversation.objects.filter(pk=conversation.pk).update(assignee=None)
            ConversationEvent.objects.create(
                conversation=conversation,
                kind=EventKind.UNASSIGNED,
                detail={"reason": f"{user.display_name} was deactivated"},
            )
        conversation.assignee = None
        conversation_route(conversation, notify=True)
    return len(open_ones)


def user_set_available(*, user: User, available: bool) -> None:
    User.objects.filter(pk=user.pk).update(is_available=available)
    user.is_available = available
