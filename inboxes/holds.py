"""Who holds an address (R6), and the tools above the engine that hold addresses too.

A connected mailbox holds its address as a personal or team email; the meetings tool
holds the address it books from. The rules (inboxes/rules.py) must see every holder
for R1, R2 and R4, and releasing a deactivated user's address (R7) must free the
tool's hold too, but the engine may not import the meetings app: a tool that holds
addresses registers an ``AddressTool`` here in its ``AppConfig.ready()``.
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

# release(user=..., canonical=..., actor=..., ip=...) -> True when ``user`` held
# ``canonical`` and no longer does. It writes its own audit record and runs in the
# caller's transaction, so a release that is refused later is rolled back with it.
HoldReleaser = Callable[..., bool]


@dataclass(frozen=True)
class ToolHold:
    """One address a user holds through a tool (for Settings > Users)."""

    held_as: str
    label: str  # "Meetings tool"
    user_id: Any
    address: str
    canonical: str


# holds(user_ids=...) -> every ToolHold of those users.
HoldLister = Callable[..., list[ToolHold]]


@dataclass(frozen=True)
class AddressTool:
    """A tool above the engine that holds addresses: who holds one (R1, R4, R6), and
    how an admin frees a deactivated user's hold (R7)."""

    held_as: str
    holder: HolderFinder
    release: HoldReleaser
    holds: HoldLister


address_tools: list[AddressTool] = []


def register_address_tool(tool: AddressTool) -> None:
    """Called from the tool's ``AppConfig.ready()``; a second call with the same tool
    (``held_as``) replaces the first."""
    address_tools[:] = [t for t in address_tools if t.held_as != tool.held_as]
    address_tools.append(tool)


def tool_holders(*, account_id: Any, canonical: str, ignore_user_id: Any = None) -> list[Holder]:
    """Every tool (not a mailbox) hold on ``canonical`` in the account."""
    found = (
        tool.holder(account_id=account_id, canonical=canonical, ignore_user_id=ignore_user_id)
        for tool in address_tools
    )
    return [holder for holder in found if holder is not None]


def tool_holder(*, account_id: Any, canonical: str, ignore_user_id: Any = None) -> Holder | None:
    """The first tool (not a mailbox) that holds ``canonical`` in the account, if any."""
    holders = tool_holders(
        account_id=account_id, canonical=canonical, ignore_user_id=ignore_user_id
    )
    return holders[0] if holders else None


def release_tool_holds(*, user: Any, canonical: str, actor: Any, ip: str | None) -> list[str]:
    """Free every tool hold ``user`` has on ``canonical``; the ``held_as`` of each freed."""
    return [
        tool.held_as
        for tool in address_tools
        if tool.release(user=user, canonical=canonical, actor=actor, ip=ip)
    ]


def tool_holds_of(user_ids: list[Any]) -> list[ToolHold]:
    """Every address these users hold through a tool."""
    return [hold for tool in address_tools for hold in tool.holds(user_ids=user_ids)]
