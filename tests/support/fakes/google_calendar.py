"""Google Calendar API v3 for the fake Google (tests/support/fakes/google.py): the
calls the meetings tool makes, with their documented shapes.

- ``POST /calendar/v3/freeBusy`` (scope ``calendar.freebusy`` or ``calendar.events``):
  ``{timeMin, timeMax, items: [{id}]}`` -> ``{calendars: {id: {busy: [{start, end}]}}}``;
  transparent and cancelled events are free.
- ``GET /calendar/v3/calendars/{id}/events?iCalUID=`` -> ``{items}``;
  ``POST .../events`` (insert), ``PUT .../events/{eventId}`` (update),
  ``DELETE .../events/{eventId}`` (204, then 410 "deleted"), scope ``calendar.events``.

``primary`` and the account's own address name its one calendar. ``add_busy`` puts
an event there from the test side.
"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

EVENTS_SCOPE = "https://www.googleapis.com/auth/calendar.events"
FREEBUSY_SCOPE = "https://www.googleapis.com/auth/calendar.freebusy"


def _time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _z(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def add_busy(fake: Any, address: str, start: datetime, end: datetime, **extra: Any) -> str:
    """An event on ``address``'s primary calendar; its id."""
    event_id = "ev" + secrets.token_hex(8)
    with fake._lock:
        fake.calendar_events.setdefault(address.lower(), {})[event_id] = {
            "id": event_id,
            "iCalUID": f"{event_id}@google.com",
            "status": "confirmed",
            "start": {"dateTime": _z(start)},
            "end": {"dateTime": _z(end)},
            **extra,
        }
    return event_id


def calendar_dispatch(fake: Any, method: str, rest: str, headers: dict, body: bytes) -> Any:
    from tests.support.fakes.google import Reply, _json, api_error

    target = urlsplit(rest)
    query = parse_qs(target.query)
    path = target.path
    account = fake._authenticate(headers, "me")
    if isinstance(account, Reply):
        return account
    token = headers.get("authorization", "")[7:]
    with fake._lock:
        scopes = set(str(fake.access_tokens[token].get("scope", "")).split())
        events = fake.calendar_events.setdefault(account.address.lower(), {})

    def forbidden() -> Any:
        return api_error(
            403, "Request had insufficient authentication scopes.", "insufficientPermissions"
        )

    if method == "POST" and path == "freeBusy":
        if not scopes & {FREEBUSY_SCOPE, EVENTS_SCOPE}:
            return forbidden()
        data = json.loads(body or b"{}")
        low, high = _time(data["timeMin"]), _time(data["timeMax"])
        answer = {}
        for item in data.get("items") or []:
            calendar_id = item["id"]
            if calendar_id not in ("primary", account.address):
                answer[calendar_id] = {"errors": [{"domain": "global", "reason": "notFound"}]}
                continue
            busy = []
            with fake._lock:
                for event in events.values():
                    if (
                        event.get("status") == "cancelled"
                        or event.get("transparency") == "transparent"
                    ):
                        continue
                    first, last = _time(event["start"]["dateTime"]), _time(event["end"]["dateTime"])
                    if first < high and last > low:
                        busy.append({"start": _z(max(first, low)), "end": _z(min(last, high))})
            answer[calendar_id] = {"busy": sorted(busy, key=lambda b: b["start"])}
        return _json(
            200,
            {
                "kind": "calendar#freeBusy",
                "timeMin": data["timeMin"],
                "timeMax": data["timeMax"],
                "calendars": answer,
            },
        )

    parts = [unquote(p) for p in path.split("/")]
    if len(parts) < 3 or parts[0] != "calendars" or parts[2] != "events":
        return api_error(404, f"No route for {method} {path}", "notFound")
    if parts[1] not in ("primary", account.address):
        return api_error(404, "Not Found", "notFound")
    if EVENTS_SCOPE not in scopes:
        return forbidden()
    with fake._lock:
        if len(parts) == 3 and method == "GET":
            uid = query.get("iCalUID", [""])[0]
            found = [e for e in events.values() if not uid or e.get("iCalUID") == uid]
            return _json(200, {"kind": "calendar#events", "items": found})
        if len(parts) == 3 and method == "POST":
            data = json.loads(body or b"{}")
            if any(
                e.get("iCalUID") == data.get("iCalUID") and e.get("status") != "cancelled"
                for e in events.values()
            ):
                return api_error(409, "The requested identifier already exists.", "duplicate")
            event_id = "ev" + secrets.token_hex(8)
            events[event_id] = {**data, "id": event_id, "status": "confirmed"}
            return _json(200, events[event_id])
        if len(parts) == 4:
            event = events.get(parts[3])
            if event is None:
                return api_error(404, "Not Found", "notFound")
            if event.get("status") == "cancelled":
                return api_error(410, "Resource has been deleted", "deleted")
            if method == "PUT":
                data = json.loads(body or b"{}")
                events[parts[3]] = {**data, "id": parts[3], "status": "confirmed"}
                return _json(200, events[parts[3]])
            if method == "DELETE":
                event["status"] = "cancelled"
                return Reply(204)
            if method == "GET":
                return _json(200, event)
    return api_error(404, f"No route for {method} {path}", "notFound")
