from django.db.models import QuerySet

from accounts.models import User


def users_visible_to(user: User) -> QuerySet[User]:
    return User.objects.filter(account_id=user.account_id)
