from django.db.models import QuerySet

from inboxes.models import Mailbox


def mailboxes_visible_to(user) -> QuerySet[Mailbox]:
    """Admins see every mailbox of their account; members see their own."""
    mailboxes = (
        Mailbox.objects.filter(account_id=user.account_id)
        .select_related("owner", "inbox")
        .prefetch_related("folders")
    )
    if user.is_admin:
        return mailboxes
    return mailboxes.filter(owner=user)
