"""Reads for one-to-one email: the contacts and emails a user may reach, the
personal mailboxes they may send from."""

from __future__ import annotations

from django.db.models import Q, QuerySet

from accounts.models import User
from crm.models import Contact, Email
from inboxes.models import Mailbox
from inboxes.selectors import own_connected_mailboxes


def contacts_of_account(user: User) -> QuerySet[Contact]:
    return Contact.objects.filter(account_id=user.account_id)


def emails_visible_to(user: User) -> QuerySet[Email]:
    """The CRM emails of the user's account that are on a timeline (logged), and the
    ones the user sent themselves (logged or not), ready for ``email_data``."""
    return (
        Email.objects.filter(account_id=user.account_id)
        .filter(Q(logged=True) | Q(sent_by=user))
        .select_related("message", "message__outbox")
        .prefetch_related("message__bounces")
    )


def send_mailboxes_of(user: User) -> QuerySet[Mailbox]:
    """The user's own connected personal mailboxes: what a one-to-one email goes from."""
    return own_connected_mailboxes(user)
