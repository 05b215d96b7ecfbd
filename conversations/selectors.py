from django.db.models import QuerySet

from conversations.models import Inbox


def inboxes_visible_to(user) -> QuerySet[Inbox]:
    return Inbox.objects.filter(account_id=user.account_id).select_related("mailbox")
