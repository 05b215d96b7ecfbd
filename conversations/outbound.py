"""New email: a conversation the team starts, from the inbox's team address to anyone
(a sales inbox reaching prospects). The first message goes through the outbox like a
reply (R9's from-name and the inbox's signature); the customer's answer threads into
the conversation by In-Reply-To, as any answer does (conversations/threading.py)."""

from __future__ import annotations

from collections.abc import Sequence

from django.db import transaction
from django.utils import timezone

from accounts.models import User
from audit.services import audit_record
from conversations.contact_links import contacts_by_canonical, timeline_for_filed
from conversations.handling import signature_blocks
from conversations.models import Conversation, ConversationEvent, ConversationMessage, EventKind
from conversations.summary import conversation_summaries_refresh
from core.errors import Invalid, NotFoundError
from core.text import one_line
from inboxes.addresses import canonical_address
from inboxes.models import Inbox
from inboxes.outbox import Recipient, outbox_create
from inboxes.selectors import inboxes_visible_to

MAX_RECIPIENTS = 50
NO_TEAM_EMAIL = (
    "This inbox has no connected team email to send from. An admin connects one in "
    "Settings › Inboxes; until then, start the email from an inbox that has one."
)


def check_can_start(actor: User, inbox: Inbox | None) -> Inbox:
    """Whoever may reply in an inbox may start a conversation from it: they see the
    inbox (another account's, or a restricted one of other teams, is ``not_found``),
    and it sends from a connected team mailbox."""
    if inbox is None or not inboxes_visible_to(actor).filter(pk=inbox.pk).exists():
        raise NotFoundError("No such inbox.")
    mailbox = inbox.mailbox
    if mailbox is None or not mailbox.is_connected:
        raise Invalid(NO_TEAM_EMAIL, errors={"inbox": ["No connected team email."]})
    return inbox


def _addresses(
    values: Sequence[str], *, field: str, label: str, team_address: str
) -> list[tuple[str, str]]:
    """(as typed, canonical) for each address, in order, without repeats."""
    found: dict[str, str] = {}
    for value in values:
        typed = (value or "").strip()
        if not typed:
            continue
        try:
            canonical = canonical_address(typed)
        except Invalid as exc:
            raise Invalid(exc.detail, errors={field: [exc.detail]}) from None
        if canonical == team_address:
            raise Invalid(
                f"{typed} is this inbox's own address: write to the customer's.",
                errors={field: ["The inbox's own address."]},
            )
        found.setdefault(canonical, typed)
    if len(found) > MAX_RECIPIENTS:
        raise Invalid(
            f"At most {MAX_RECIPIENTS} addresses in {label}.",
            errors={field: [f"At most {MAX_RECIPIENTS} addresses."]},
        )
    return [(typed, canonical) for canonical, typed in found.items()]


def conversation_start(
    *,
    actor: User,
    inbox: Inbox | None,
    to: Sequence[str],
    cc: Sequence[str] = (),
    subject: str,
    text: str,
    html: str = "",
) -> Conversation:
    """Start a conversation with an email from the inbox's team address.

    The conversation is assigned to the sender, its customer is the first ``to``
    address (linked to the CRM contact with it, if any); the email and its outbox row
    are written in one transaction and sent after commit."""
    inbox = check_can_start(actor, inbox)
    mailbox = inbox.mailbox
    assert mailbox is not None  # check_can_start refuses an inbox without one
    team = mailbox.canonical_address
    recipients = _addresses(to, field="to", label="To", team_address=team)
    if not recipients:
        raise Invalid("Add who the email is to.", errors={"to": ["This field is required."]})
    copies = [
        c
        for c in _addresses(cc, field="cc", label="Cc", team_address=team)
        if c[1] not in {canonical for _, canonical in recipients}
    ]
    subject = one_line(subject or "")
    if not subject:
        raise Invalid("Add a subject.", errors={"subject": ["This field is required."]})
    if not (text or "").strip():
        raise Invalid("Write the email.", errors={"text": ["This field is required."]})
    contacts = contacts_by_canonical(
        inbox.account_id, [canonical for _, canonical in [*recipients, *copies]]
    )

    def named(entries: list[tuple[str, str]]) -> list[Recipient]:
        return [
            Recipient(typed, one_line(contacts[c].name) if c in contacts else "")
            for typed, c in entries
        ]

    signature_text, signature_html = signature_blocks(inbox.signature)
    body_text = text.rstrip() + ("\n\n" + signature_text if signature_text else "") + "\n"
    body_html = html + signature_html if html else ""
    customer, customer_canonical = recipients[0]
    with transaction.atomic():
        item = outbox_create(
            mailbox=mailbox,
            from_name=one_line(inbox.from_name),
            to=named(recipients),
            cc=named(copies),
            subject=subject,
            text=body_text,
            html=body_html,
        )
        now = timezone.now()
        conversation = Conversation.objects.create(
            account_id=inbox.account_id,
            inbox=inbox,
            subject=subject,
            assignee=actor,
            customer_address=customer.lower(),
            customer_canonical=customer_canonical,
            contact=contacts.get(customer_canonical),
            last_message_at=now,
            message_count=1,
        )
        link = ConversationMessage.objects.create(
            inbox=inbox, conversation=conversation, message=item.message
        )
        ConversationEvent.objects.create(
            conversation=conversation,
            kind=EventKind.ASSIGNED,
            actor=actor,
            assignee=actor,
            detail={"by": actor.display_name, "reason": "started the conversation"},
        )
        conversation_summaries_refresh([conversation.pk])
        timeline_for_filed([link], inbox_name=inbox.name)
        audit_record(
            account=inbox.account,
            actor=actor,
            action="conversation.started",
            target=conversation,
            data={"outbox": str(item.pk), "to": [c for _, c in recipients]},
        )
    return conversation


def startable_inboxes(actor: User) -> list[Inbox]:
    """The inboxes the actor may start a conversation from (New email's choice)."""
    return [
        inbox
        for inbox in inboxes_visible_to(actor).order_by("name")
        if inbox.mailbox is not None and inbox.mailbox.is_connected
    ]
