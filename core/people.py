"""The signed-in person as the base layer sees them.

``core`` and ``audit`` sit below ``accounts`` (DESIGN.md section 3), so they may not
name its ``User`` model, not even for type checking; they type people with this
protocol, which ``accounts.models.User`` satisfies.
"""

from __future__ import annotations

from typing import Any, Protocol


class Member(Protocol):
    @property
    def pk(self) -> Any: ...

    @property
    def account_id(self) -> Any: ...

    @property
    def account(self) -> Any: ...

    @property
    def display_name(self) -> str: ...

    @property
    def is_admin(self) -> bool: ...
