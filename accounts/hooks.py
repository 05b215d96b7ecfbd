"""What the apps above accounts do when a user is deactivated.

Deactivating is an accounts service, but its consequences belong to higher layers
(the conversations inbox sends the user's open conversations back to routing). They
register a handler here in their ``AppConfig.ready()``; accounts never imports them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from accounts.models import User

# Called as handler(user=...); whatever it returns is ignored.
DeactivationHandler = Callable[..., object]

deactivation_handlers: list[DeactivationHandler] = []


def on_user_deactivated(handler: DeactivationHandler) -> None:
    """``handler(user=...)`` runs after a user is deactivated, inside the same request."""
    if handler not in deactivation_handlers:
        deactivation_handlers.append(handler)


def user_deactivated(user: User) -> None:
    for handler in deactivation_handlers:
        handler(user=user)
