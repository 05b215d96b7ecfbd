"""What the apps above the CRM add to its own work.

The CRM never imports the apps above it (DESIGN.md section 3). They register here in
their ``AppConfig.ready()``; the conversations inbox links the conversations whose
customer a new contact is, and puts their mail on the contact's timeline.

Every way a contact comes to be calls ``contacts_created``: ``contact_create`` (the
API, the pages, a conversation's "Make contact") with one contact, an import with all
the contacts it created, once, so a callback can do its work in a few queries.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from crm.models import Contact

# Called as callback(contacts) inside the creating transaction; its result is ignored.
ContactsCreatedCallback = Callable[[list["Contact"]], object]

contacts_created_callbacks: list[ContactsCreatedCallback] = []


def on_contacts_created(callback: ContactsCreatedCallback) -> None:
    if callback not in contacts_created_callbacks:
        contacts_created_callbacks.append(callback)


def contacts_created(contacts: list[Contact]) -> None:
    """Tell the apps above that these contacts were just created (an import passes
    the whole batch)."""
    if not contacts:
        return
    for callback in contacts_created_callbacks:
        callback(contacts)
