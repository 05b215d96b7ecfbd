"""Reads of the meetings tool."""

from __future__ import annotations

from typing import Any

from inboxes.holds import HELD_AS_MEETINGS, Holder, ToolHold
from meetings.models import MeetingsConnection


def meetings_address_holder(
    *, account_id: Any, canonical: str, ignore_user_id: Any = None
) -> Holder | None:
    """The meetings connection booking from ``canonical``, as a holder for R4 and R6."""
    connections = MeetingsConnection.objects.filter(
        account_id=account_id, canonical_address=canonical
    )
    if ignore_user_id is not None:
        connections = connections.exclude(user_id=ignore_user_id)
    connection = connections.select_related("user").first()
    if connection is None:
        return None
    return Holder(
        held_as=HELD_AS_MEETINGS,
        holder_type="user",
        holder_id=connection.user_id,
        holder_name=connection.user.display_name,
        holder_is_active=connection.user.is_active,
        user_id=connection.user_id,
    )


def meetings_holds(*, user_ids: list[Any]) -> list[ToolHold]:
    """The meetings addresses of these users, for Settings > Users."""
    return [
        ToolHold(
            held_as=HELD_AS_MEETINGS,
            label="Meetings tool",
            user_id=connection.user_id,
            address=connection.address,
            canonical=connection.canonical_address,
        )
        for connection in MeetingsConnection.objects.filter(user_id__in=user_ids).order_by(
            "address"
        )
    ]
