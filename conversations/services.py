"""Writes on conversations inboxes (R3, R5, R9)."""

from __future__ import annotations

from django.core.files.storage import default_storage
from django.db import IntegrityError, models, transaction
from django.utils import timezone

from accounts.models import User
from accounts.services import account_lock
from audit.services import audit_record
from conversations.models import Inbox
from core.errors import Invalid, TeamAddressInOtherInbox
from inboxes import rules
from inboxes.models import Mailbox
from inboxes.sync import schedule_sync

UNSET = object()


def _check_name(name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise Invalid("The inbox needs a name.", errors={"name": ["This field is required."]})
    if len(name) > 200:
        raise Invalid("The name is too long.", errors={"name": ["At most 200 characters."]})
    return name


def inbox_create(*, actor: User, name: str, from_name: str = "", ip: str | None = None) -> Inbox:
    rules.check_admin(actor, "create an inbox")
    name = _check_name(name)
    try:
        with transaction.atomic():
            account = account_lock(actor.account_id)
            # R5 under the account lock: two creates at the limit can't both pass.
            rules.check_inbox_create(account=account)
            inbox = Inbox.objects.create(account=account, name=name, from_name=from_name.strip())
            audit_record(account=account, actor=actor, action="inbox.created", target=inbox, ip=ip)
    except IntegrityError as exc:
        raise Invalid(
            f"There is already an inbox called {name}.",
            errors={"name": ["An inbox with this name exists."]},
        ) from exc
    return inbox


def inbox_update(
    *,
    actor: User,
    inbox: Inbox,
    name: str | object = UNSET,
    from_name: str | object = UNSET,
    mailbox: Mailbox | None | object = UNSET,
    ip: str | None = None,
) -> Inbox:
    """Rename, set the from-name (R9), connect or detach the team email (R3, R4)."""
    rules.check_admin(actor, "change an inbox")
    changes: dict[str, object] = {}
    try:
        with transaction.atomic():
            account_lock(actor.account_id)
            inbox = Inbox.objects.select_related("mailbox").get(pk=inbox.pk)
            if name is not UNSET:
                inbox.name = _check_name(name)  # type: ignore[arg-type]
                changes["name"] = inbox.name
            if from_name is not UNSET:
                inbox.from_name = str(from_name).strip()[:200]
                changes["from_name"] = inbox.from_name
            if mailbox is not UNSET and mailbox != inbox.mailbox:
                if mailbox is not None:
                    rules.check_inbox_attach(inbox=inbox, mailbox=mailbox, viewer=actor)  # type: ignore[arg-type]
                changes["mailbox"] = mailbox.address if mailbox is not None else None  # type: ignore[union-attr]
                inbox.mailbox = mailbox  # type: ignore[assignment]
                if mailbox is not None:
                    schedule_sync(mailbox.pk)  # type: ignore[union-attr]
            inbox.save()
            if changes:
                audit_record(
                    account=inbox.account,
                    actor=actor,
                    action="inbox.updated",
                    target=inbox,
                    ip=ip,
                    data=changes,
                )
    except IntegrityError as exc:
        if "mailbox" in changes:
            raise TeamAddressInOtherInbox(
                f"{changes['mailbox']} was just connected to another inbox."
            ) from exc
        raise Invalid(
            "There is already an inbox with this name.",
            errors={"name": ["An inbox with this name exists."]},
        ) from exc
    return inbox


def inbox_delete(*, actor: User, inbox: Inbox, ip: str | None = None) -> None:
    rules.check_admin(actor, "delete an inbox")
    with transaction.atomic():
        audit_record(
            account=inbox.account,
            actor=actor,
            action="inbox.deleted",
            target=inbox,
            ip=ip,
            data={"mailbox": inbox.mailbox.address if inbox.mailbox else None},
        )
        inbox.delete()


# --- Replies -------------------------------------------------------------------------------------


def conversation_reply(
    *,
    actor: User,
    conversation,
    text: str,
    html: str = "",
    reply_all: bool = False,
):
    """Reply from the inbox's team address with its from-name (R9).

    The reply (with In-Reply-To and References of the last message) and its
    outbox row are written in one transaction; the send happens after commit.
    Returns the outbound Message, which is in the thread at once.
    """
    from conversations.models import ConversationMessage, Direction
    from core.errors import Invalid
    from inboxes.sending import Recipient, outbox_create

    inbox = conversation.inbox
    mailbox = inbox.mailbox
    if mailbox is None or not mailbox.is_connected:
        raise Invalid("This inbox has no connected team email to reply from.")
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
    cc = []
    if reply_all:
        seen = {r.address.lower() for r in to}
        for recipient in others(last_inbound.to) + others(last_inbound.cc):
            if recipient.address.lower() not in seen:
                seen.add(recipient.address.lower())
                cc.append(recipient)
    if not to:
        raise Invalid("There is nobody to reply to in this conversation.")
    subject = last.subject or conversation.subject
    if subject and not subject.lower().startswith("re:"):
        subject = f"Re: {subject}"
    with transaction.atomic():
        item = outbox_create(
            mailbox=mailbox,
            from_name=inbox.from_name,
            to=to,
            cc=cc,
            subject=subject,
            text=text,
            html=html,
            in_reply_to=last.message_id,
            references=[*last.references, last.message_id],
        )
        ConversationMessage.objects.create(
            inbox=inbox, conversation=conversation, message=item.message
        )
        type(conversation).objects.filter(pk=conversation.pk).update(
            message_count=models.F("message_count") + 1, last_message_at=timezone.now()
        )
        audit_record(
            account=inbox.account,
            actor=actor,
            action="conversation.replied",
            target=conversation,
            data={"outbox": str(item.pk)},
        )
    return item.message


def message_delete(*, actor: User, message) -> None:
    """Delete an email from Postkamer for good: it leaves a tombstone, so no later
    sync (or resync) of any mailbox of the account imports it again."""
    from inboxes.models import Tombstone

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
        for conversation in message.conversations.all():
            type(conversation).objects.filter(pk=conversation.pk).update(
                message_count=models.F("message_count") - 1
            )
        files = [message.raw.name, *(a.file.name for a in message.attachments.all())]
        message.delete()
        transaction.on_commit(lambda: [default_storage.delete(name) for name in files if name])
