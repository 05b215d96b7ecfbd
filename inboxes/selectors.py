from django.conf import settings
from django.db.models import Q, QuerySet

from accounts.models import Account, User
from inboxes.models import Inbox, Mailbox, MailboxKind, MailboxStatus


def mailboxes_visible_to(user: User) -> QuerySet[Mailbox]:
    """Admins see every mailbox of their account; members see their own."""
    mailboxes = (
        Mailbox.objects.filter(account_id=user.account_id)
        .select_related("owner", "inbox")
        .prefetch_related("folders")
    )
    if user.is_admin:
        return mailboxes
    return mailboxes.filter(owner=user)


def own_connected_mailboxes(user: User) -> QuerySet[Mailbox]:
    """The user's own personal mailboxes that are not disconnected: what one-to-one
    email, sequences and the meetings tool may send from."""
    return (
        Mailbox.objects.filter(account_id=user.account_id, owner=user, kind=MailboxKind.PERSONAL)
        .exclude(status=MailboxStatus.DISCONNECTED)
        .order_by("address")
    )


def inboxes_visible_to(user: User) -> QuerySet[Inbox]:
    """Admins see every inbox; others the unrestricted ones and their teams' ones."""
    inboxes = (
        Inbox.objects.filter(account_id=user.account_id)
        .select_related("mailbox")
        .prefetch_related("visible_to_teams")
    )
    if user.is_admin:
        return inboxes
    return inboxes.filter(Q(restricted=False) | Q(visible_to_teams__members=user)).distinct()


def inbox_plan_usage(account: Account) -> tuple[int, int]:
    """(inboxes the account has, inboxes its plan allows): "2 of 2 inboxes on Starter".
    The same count and limit ``rules.check_inbox_create`` refuses on (R5)."""
    limit = settings.PLAN_INBOX_LIMITS.get(account.plan, 0)
    return Inbox.objects.filter(account=account).count(), limit
