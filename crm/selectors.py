"""Reads of the CRM: contacts and their timelines. Contacts are the account's: every
user of the account sees every contact, and no one else sees any."""

from __future__ import annotations

from base64 import urlsafe_b64decode, urlsafe_b64encode
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar
from uuid import UUID

from django.db.models import Model, Prefetch, Q, QuerySet

from accounts.models import User
from crm.models import Contact, Note, Sequence, TimelineEvent
from inboxes.models import Message

_Row = TypeVar("_Row", bound=Model)


def contacts_visible_to(user: User) -> QuerySet[Contact]:
    return Contact.objects.filter(account_id=user.account_id)


def contacts_search(contacts: QuerySet[Contact], text: str) -> QuerySet[Contact]:
    """Name, email and company containing ``text``, whatever its case. On PostgreSQL
    trigram indexes serve the match (migration crm/0002_contacts_search)."""
    text = text.strip()
    if not text:
        return contacts
    return contacts.filter(
        Q(name__icontains=text) | Q(email__icontains=text) | Q(company__icontains=text)
    )


def contact_list(user: User, *, search: str = "") -> QuerySet[Contact]:
    """Newest first, with the owner for display."""
    return contacts_search(contacts_visible_to(user), search).select_related("owner")


def contact_timeline(contact: Contact) -> QuerySet[TimelineEvent]:
    """Newest first, each event with its email, the stored message, the outbox row and
    the bounces the delivery state reads: a page costs a fixed number of queries."""
    return (
        TimelineEvent.objects.filter(contact=contact)
        .select_related("email__message__outbox")
        # Every header and the References list are not shown: not read either.
        .defer("email__message__headers", "email__message__references")
        .prefetch_related(
            Prefetch("email__message__bounces", queryset=Message.objects.order_by("created_at"))
        )
        .order_by("-at", "-id")
    )


def contact_notes(contact: Contact) -> QuerySet[Note]:
    return Note.objects.filter(contact=contact).select_related("author").order_by("-created_at")


def sequences_of_account(user: User) -> QuerySet[Sequence]:
    """The sequences a contact can be enrolled in from the contacts list."""
    return Sequence.objects.filter(account_id=user.account_id).order_by("name")


def account_users(user: User) -> QuerySet[User]:
    """The people a contact can be given to as its owner."""
    return User.objects.filter(account_id=user.account_id, is_active=True).order_by(
        "full_name", "email"
    )


@dataclass
class KeysetPage(Generic[_Row]):
    rows: list[_Row]
    next: str | None  # the position after the last row, for the next page's ``after``


def _position(moment: datetime, pk: UUID) -> str:
    return urlsafe_b64encode(f"{moment.isoformat()}|{pk}".encode()).decode()


def _read_position(token: str) -> tuple[datetime, UUID] | None:
    try:
        moment, _, pk = urlsafe_b64decode(token.encode()).decode().partition("|")
        parsed, row_id = datetime.fromisoformat(moment), UUID(pk)
    except (ValueError, UnicodeError):
        return None
    return (parsed, row_id) if parsed.tzinfo is not None else None


def keyset_page(
    rows: QuerySet[_Row], *, field: str, after: str = "", size: int = 50
) -> KeysetPage[_Row]:
    """``size`` rows of ``rows`` (ordered by ``-field, -id``) after the position
    ``after`` from a previous page; a position we did not make starts at the top."""
    position = _read_position(after) if after else None
    if position is not None:
        moment, pk = position
        rows = rows.filter(Q(**{f"{field}__lt": moment}) | Q(**{field: moment, "id__lt": pk}))
    found = list(rows.order_by(f"-{field}", "-id")[: size + 1])
    more = len(found) > size
    found = found[:size]
    last = found[-1] if found else None
    return KeysetPage(
        rows=found,
        next=_position(getattr(last, field), last.pk) if more and last is not None else None,
    )
