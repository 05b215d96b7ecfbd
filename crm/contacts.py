"""Contacts: created, changed and removed here, whatever the caller (API, pages, import,
a conversation's "make contact")."""

from __future__ import annotations

from django.db import IntegrityError, transaction

from accounts.models import Account, User
from core.errors import Invalid
from core.text import check_single_line
from crm.errors import ContactExists
from crm.hooks import contacts_created
from crm.models import Contact, Note, TimelineType
from crm.timeline import timeline_add
from inboxes.addresses import canonical_address


def contact_existing(account: Account, canonical: str) -> Contact | None:
    return Contact.objects.filter(account=account, canonical_email=canonical).first()


def canonical_email(email: str) -> str:
    """The canonical form of a contact's address; Invalid names the ``email`` field."""
    try:
        return canonical_address(email)
    except Invalid as exc:
        raise Invalid(exc.detail, errors={"email": ["Enter a valid email address."]}) from None


def _exists_error(found: Contact) -> ContactExists:
    return ContactExists(f"{found.email} is already a contact.", contact={"id": str(found.pk)})


def contact_create(
    *,
    account: Account,
    email: str,
    name: str = "",
    company: str = "",
    owner: User | None = None,
) -> Contact:
    """A new contact; ``contact_exists`` when the account has one with the same
    canonical address (the database constraint settles two at once). The apps above
    hear of it (crm/hooks.py) in the same transaction."""
    canonical = canonical_email(email)
    check_single_line(name, field="name", label="name")
    check_single_line(company, field="company", label="company")
    if owner is not None and owner.account_id != account.pk:
        raise Invalid("The owner is not in this account.", errors={"owner": ["Unknown user."]})
    found = contact_existing(account, canonical)
    if found is not None:
        raise _exists_error(found)
    with transaction.atomic():  # the contact and what the apps above make of it
        try:
            with transaction.atomic():
                contact = Contact.objects.create(
                    account=account,
                    email=email.strip(),
                    canonical_email=canonical,
                    name=name.strip(),
                    company=company.strip(),
                    owner=owner,
                )
        except IntegrityError:
            found = contact_existing(account, canonical)
            if found is None:
                raise
            raise _exists_error(found) from None
        contacts_created([contact])
    return contact


_UNSET: object = object()


def contact_update(
    *,
    contact: Contact,
    email: str | None = None,
    name: str | None = None,
    company: str | None = None,
    owner: User | None | object = _UNSET,
) -> Contact:
    """Changes what is given (``owner=None`` clears the owner); a new address is
    canonicalised again and is ``contact_exists`` when another contact has it."""
    fields: list[str] = []
    if email is not None:
        canonical = canonical_email(email)
        if canonical != contact.canonical_email:
            found = contact_existing_other(contact, canonical)
            if found is not None:
                raise _exists_error(found)
            contact.canonical_email = canonical
            fields.append("canonical_email")
        contact.email = email.strip()
        fields.append("email")
    if name is not None:
        contact.name = check_single_line(name, field="name", label="name").strip()
        fields.append("name")
    if company is not None:
        contact.company = check_single_line(company, field="company", label="company").strip()
        fields.append("company")
    if owner is not _UNSET:
        if owner is not None and (
            not isinstance(owner, User) or owner.account_id != contact.account_id
        ):
            raise Invalid("The owner is not in this account.", errors={"owner": ["Unknown user."]})
        contact.owner = owner
        fields.append("owner")
    if not fields:
        return contact
    try:
        with transaction.atomic():
            contact.save(update_fields=[*fields, "updated_at"])
    except IntegrityError:
        # Another request gave the same address to another contact meanwhile.
        found = contact_existing_other(contact, contact.canonical_email)
        if found is None:
            raise
        raise _exists_error(found) from None
    return contact


def contact_existing_other(contact: Contact, canonical: str) -> Contact | None:
    return (
        Contact.objects.filter(account_id=contact.account_id, canonical_email=canonical)
        .exclude(pk=contact.pk)
        .first()
    )


def contact_delete(*, contact: Contact) -> None:
    """The contact and everything logged on it (emails, notes, timeline, enrolments)."""
    contact.delete()


def note_add(*, contact: Contact, author: User | None, text: str) -> Note:
    """A note on the contact, shown on its timeline."""
    text = text.strip()
    if not text:
        raise Invalid("Write something in the note.", errors={"text": ["This field is required."]})
    with transaction.atomic():
        note = Note.objects.create(
            account_id=contact.account_id, contact=contact, author=author, text=text
        )
        timeline_add(
            contact,
            TimelineType.NOTE,
            at=note.created_at,
            detail={
                "note": str(note.pk),
                "text": text,
                "author": str(author.pk) if author else None,
                "author_name": author.display_name if author else "",
            },
        )
    return note
