"""The audit log as CSV, safe to open in a spreadsheet."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from typing import Any

from audit.models import AuditEvent

HEADER = ["time_utc", "actor", "action", "target_type", "target", "ip", "changes", "data"]
# A cell a spreadsheet would read as a formula (CSV injection, OWASP): starts with one of
# these, also after leading white space or a tab/CR some programs strip first.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value: Any) -> str:
    text = "" if value is None else str(value)
    if text.lstrip(" ").startswith(_FORMULA_STARTS):
        return "'" + text
    return text


def _shown(value: Any) -> str:
    if value is None:
        return "none"
    if value == "":
        return "(empty)"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(str(item) for item in value) or "(none)"
    return str(value)


def change_lines(data: Any) -> list[str]:
    """``field: before -> after`` for each change an event records (data["changes"])."""
    changes = data.get("changes") if isinstance(data, dict) else None
    if not isinstance(changes, dict):
        return []
    return [
        f"{field}: {_shown(change.get('before'))} → {_shown(change.get('after'))}"
        for field, change in changes.items()
        if isinstance(change, dict)
    ]


def changes_text(data: Any) -> str:
    return "; ".join(change_lines(data))


class _Echo:
    def write(self, value: str) -> str:
        return value


def audit_csv_rows(events: Iterable[AuditEvent]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(HEADER)
    for event in events:
        row = [
            event.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            event.actor_name,
            event.action,
            event.target_type,
            event.target_repr,
            event.ip or "",
            changes_text(event.data),
            json.dumps(event.data, ensure_ascii=False, sort_keys=True) if event.data else "",
        ]
        yield writer.writerow([csv_safe(cell) for cell in row])
