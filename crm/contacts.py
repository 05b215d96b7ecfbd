"""Contacts: created, changed and removed here, whatever the caller (API, pages, import,
a conversation's "make contact")."""

from __future__ import annotations

from django.db import IntegrityError, transaction

from accounts.models import Account, User
from core.errors import Invalid
from core.text import check_single_line
from crm.errors import ContactExists
from crm.hooks import contacts_created
from crm.models import Contact
from inboxes.addresses import canonical_address


def contact_existing(account: Account, canonical: str) -> Contact | None:
    return Contact.objects.filter(account=account, canonical_email=canonical).first()


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
    canonical = canonical_address(email)
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
