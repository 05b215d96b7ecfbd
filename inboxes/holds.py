"""Who holds an address (R6), and the tools above the engine that hold addresses too.

A connected mailbox holds its address as a personal or team email; the meetings tool
holds the address it books from. The rules (inboxes/rules.py) must see every holder
for R1, R2 and R4, but the engine may not import the meetings app: a tool that holds
addresses registers a ``HolderFinder`` here in its ``AppConfig.ready()``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

HELD_AS_PERSONAL = "personal"
HELD_AS_TEAM = "team"
HELD_AS_MEETINGS = "meetings"


@dataclass(frozen=True)
class Holder:
    """Who holds an address, and how (R6)."""

    held_as: str
    holder_type: str | None  # "user" | "inbox" | None (team email not in an inbox yet)
    holder_id: Any
    holder_name: str
    holder_is_active: bool
    user_id: Any  # the user holding it (personal or meetings), None for team
    mailbox_id: Any = None

    def describe(self) -> str:
        if self.held_as == HELD_AS_PERSONAL:
            text = f"connected as personal email by {self.holder_name}"
        elif self.held_as == HELD_AS_TEAM:
            text = (
                f"team email of inbox {self.holder_name}"
                if self.holder_type == "inbox"
                else "team email (not connected to an inbox yet)"
            )
        else:
            text = f"meetings tool of {self.holder_name}"
        if self.holder_type == "user" and not self.holder_is_active:
            text += " (deactivated)"
        return text


# finder(account_id=..., canonical=..., ignore_user_id=...) -> the tool's Holder or None;
# ``ignore_user_id`` leaves out that user's own hold (a user changing their own address).
HolderFinder = Callable[..., Holder | None]

holder_finders: list[HolderFinder] = []


def register_holder_finder(finder: HolderFinder) -> None:
    if finder not in holder_finders:
        holder_finders.append(finder)


def tool_holder(*, account_id: Any, canonical: str, ignore_user_id: Any = None) -> Holder | None:
    """The first tool (not a mailbox) that holds ``canonical`` in the account, if any."""
    for finder in holder_finders:
        holder = finder(account_id=account_id, canonical=canonical, ignore_user_id=ignore_user_id)
        if holder is not None:
            return holder
    return None
