"""Domain errors of the meetings tool (mapped to the API's error shape by core/api.py)."""

from __future__ import annotations

from datetime import tzinfo
from typing import TYPE_CHECKING, Any

from core.errors import DomainError

if TYPE_CHECKING:
    from meetings.slots import Slot


class SlotUnavailable(DomainError):
    """The time asked for is taken or was never offered (409 ``slot_unavailable``).

    ``alternatives`` are free slots near the asked time, in UTC; the API writes them
    as ``[{start, end}]`` in the visitor's zone.
    """

    code = "slot_unavailable"
    status = 409

    def __init__(
        self,
        detail: str,
        alternatives: list[Slot] | None = None,
        *,
        tz: tzinfo | None = None,
        **extra: Any,
    ) -> None:
        self.alternatives: list[Slot] = list(alternatives or [])
        self.tz = tz  # the visitor's zone, for the offsets the API answers with
        super().__init__(detail, **extra)

    def as_dict(self) -> dict[str, Any]:
        return {
            **super().as_dict(),
            "alternatives": [
                {
                    "start": slot.start.astimezone(self.tz).isoformat(),
                    "end": slot.end.astimezone(self.tz).isoformat(),
                }
                for slot in self.alternatives
            ],
        }
