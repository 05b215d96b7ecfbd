"""The URL state of the three-pane inbox, /inbox/: which view and inbox the list
shows, its search, where a page of rows starts (keyset cursors), and whether
remote images are loaded.

Every link and form of the inbox carries this state in its query string, so a
page works the same opened from a link, reloaded, or fetched by htmx.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit

from django.http import Http404, QueryDict
from django.shortcuts import get_object_or_404

from accounts.auth import AuthenticatedHttpRequest
from accounts.models import User
from inboxes.models import Inbox
from inboxes.selectors import inboxes_visible_to

VIEWS = [
    ("unassigned", "Unassigned"),
    ("mine", "Mine"),
    ("open", "All open"),
    ("mentions", "Mentions"),
    ("snoozed", "Snoozed"),
    ("closed", "Closed"),
    ("bounces", "Bounces"),
]
VIEW_NAMES = dict(VIEWS)
DEFAULT_VIEW = "unassigned"

# A place in the list: (last_message_at, id), see cursor() and cursor_key().
CursorKey = tuple[datetime | None, uuid.UUID]


@dataclass
class ListState:
    view: str = DEFAULT_VIEW
    inbox: Inbox | None = None
    q: str = ""
    # The list starts after this row ("Show more" without JavaScript pages this way).
    after: str = ""
    # A poll of the list's first page once pages were appended below it: refresh the
    # rows down to this one (the first appended page starts right after it).
    upto: str = ""
    images: bool = False

    def params(self, **changes: str) -> dict[str, str]:
        values = {
            "view": self.view,
            "inbox": str(self.inbox.pk) if self.inbox else "",
            "q": self.q,
            "after": self.after,
        }
        values.update(changes)
        if values["view"] == DEFAULT_VIEW:
            values["view"] = ""
        return {key: value for key, value in values.items() if value}

    def query(self, **changes: str) -> str:
        return urlencode(self.params(**changes))

    @property
    def title(self) -> str:
        if self.q:
            where = f" in {self.inbox.name}" if self.inbox else ""
            return f"Search “{self.q}”{where}"
        name = VIEW_NAMES[self.view]
        return f"{self.inbox.name} · {name}" if self.inbox else name


def list_state(request: AuthenticatedHttpRequest) -> ListState:
    return state_from(request.user, request.GET)


def state_from(user: User, data: QueryDict) -> ListState:
    inbox = None
    if data.get("inbox"):
        visible = inboxes_visible_to(user).select_related(None).prefetch_related(None)
        inbox = get_object_or_404(visible, pk=uuid_or_404(data["inbox"]))
    # Every appended page names its start; the first one's is where the first page ends.
    upto = (data.getlist("upto") or [""])[0]
    view = data.get("view") or ("open" if inbox else DEFAULT_VIEW)
    if view not in VIEW_NAMES:
        view = DEFAULT_VIEW
    return ListState(
        view=view,
        inbox=inbox,
        q=" ".join((data.get("q") or "").split())[:200],
        after=data.get("after", "") if cursor_key(data.get("after", "")) else "",
        upto=upto if cursor_key(upto) else "",
        images=data.get("images") == "1",
    )


def list_state_from_post(request: AuthenticatedHttpRequest) -> ListState:
    """The list parameters of the page the form was on (its ``next``), for the
    refreshed thread's links and poller."""
    query = urlsplit(request.POST.get("next", "")).query
    try:
        return state_from(request.user, QueryDict(query))
    except Http404:
        return ListState()


def uuid_or_404(value: Any) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise Http404("Unknown id.") from None


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def cursor(row: dict[str, Any]) -> str:
    """A row's place in the list (last_message_at, id), exact to the microsecond."""
    moment = row["last_message_at"]
    stamp = "-" if moment is None else str((moment - _EPOCH) // _MICROSECOND)
    return f"{stamp}.{row['id'].hex}"


def cursor_key(value: str) -> CursorKey | None:
    stamp, _, pk = (value or "").partition(".")
    try:
        moment = None if stamp == "-" else _EPOCH + int(stamp) * _MICROSECOND
        return moment, uuid.UUID(hex=pk)
    except (ValueError, OverflowError):
        return None
