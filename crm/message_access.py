"""Who may read a stored message, as far as the CRM knows (the engine asks through its hook)."""

from __future__ import annotations

from django.db.models import Q

from accounts.models import User
from crm.models import Email
from inboxes.models import Message


def message_on_readable_email(user: User, message: Message) -> bool:
    """The engine's reader hook (inboxes/access.py): a CRM email on ``message`` that is
    logged (on a contact's timeline, which the account shares) or that ``user`` sent."""
    return (
        Email.objects.filter(account_id=user.account_id, message=message)
        .filter(Q(logged=True) | Q(sent_by=user))
        .exists()
    )
