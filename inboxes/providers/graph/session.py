"""Reading a Microsoft 365 mailbox: ``GraphSession``, delta rounds per folder."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import requests

from inboxes.models import FolderRole, Mailbox, MailboxKind
from inboxes.providers.base import Changes, FolderSpec, ProviderError, RawMessage
from inboxes.providers.graph.client import GraphMailbox
from inboxes.providers.graph.http import (
    MAX_CONCURRENT_REQUESTS,
    failure,
    graph_error,
    iso,
    json_of,
    network_failure,
    parse_time,
    same_origin,
)

log = logging.getLogger(__name__)

INBOX = FolderSpec(FolderRole.INBOX, "inbox")  # Graph's well-known folder names
SENT = FolderSpec(FolderRole.SENT, "sentitems")

DELTA_PAGE_SIZE = 100  # Prefer: odata.maxpagesize (Graph's default page is 10)
LIST_PAGE_SIZE = 100
FETCH_WINDOW = 2 * MAX_CONCURRENT_REQUESTS  # messages downloaded (and held) at a time
DELTA_GONE_CODES = frozenset({"syncstatenotfound", "syncstateinvalid"})


class _DeltaGone(Exception):
    """Graph no longer knows the delta state (410 SyncStateNotFound)."""


class GraphSession(GraphMailbox):
    """Reads one Microsoft 365 mailbox (a context manager)."""

    def __init__(self, mailbox: Mailbox) -> None:
        super().__init__(mailbox)
        self._received: dict[str, datetime | None] = {}
        self._pool: ThreadPoolExecutor | None = None

    def __enter__(self) -> GraphSession:
        self._open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._close()

    # --- folders ---------------------------------------------------------------------------------

    def folders(self) -> list[FolderSpec]:
        if self.mailbox.kind == MailboxKind.PERSONAL:
            return [INBOX, SENT]
        return [INBOX]

    def sent_folder(self) -> FolderSpec | None:
        return SENT  # team emails too: a send of unknown outcome is looked up there

    def store_sent_copy(self, raw: bytes) -> None:
        """Nothing to do: Microsoft files what it sends in Sent Items itself."""
        return None

    # --- reading ---------------------------------------------------------------------------------

    def changes(self, folder: FolderSpec, cursor: dict, since: datetime | None) -> Changes:
        link = str((cursor or {}).get("delta_link") or "")
        if link and same_origin(link):
            try:
                items, delta_link = self._delta_round(link)
            except _DeltaGone:
                log.info("delta state of %s %s expired; new round", self.mailbox.pk, folder.name)
            else:
                return self._changes_from(items, delta_link, cursor.get("since"), reset=False)
        # First round, or the stored one no longer applies (expired, or a link to
        # another GRAPH_API_ENDPOINT): list everything in the backfill window again.
        since_iso = iso(since) if since else None
        try:
            items, delta_link = self._delta_round(self._initial_delta_url(folder, since_iso))
        except _DeltaGone as exc:
            raise ProviderError("Microsoft Graph refused to start a new delta round.") from exc
        return self._changes_from(items, delta_link, since_iso, reset=bool(cursor))

    def _initial_delta_url(self, folder: FolderSpec, since_iso: str | None) -> str:
        url = (
            f"{self.base}/mailFolders/{folder.name}/messages/delta"
            "?$select=id,receivedDateTime,internetMessageId"
        )
        if since_iso:
            url += "&$filter=" + quote(f"receivedDateTime ge {since_iso}", safe=":")
        return url

    def _delta_round(self, url: str) -> tuple[list[dict], str]:
        items: list[dict] = []
        while True:
            response = self._request(
                "GET",
                url,
                "list new messages",
                headers={"Prefer": f"odata.maxpagesize={DELTA_PAGE_SIZE}"},
            )
            if response.status_code == 410 or graph_error(response)[0].lower() in DELTA_GONE_CODES:
                raise _DeltaGone(url)
            if response.status_code != 200:
                raise failure(response, "list new messages")
            page = json_of(response)
            items.extend(item for item in page.get("value") or [] if isinstance(item, dict))
            next_link = page.get("@odata.nextLink")
            if next_link:
                url = self._checked_link(next_link)
                continue
            delta_link = page.get("@odata.deltaLink")
            if not delta_link:
                raise ProviderError("Microsoft Graph ended a delta round without a deltaLink.")
            return items, self._checked_link(delta_link)

    @staticmethod
    def _checked_link(url: str) -> str:
        if not same_origin(url):
            raise ProviderError(
                "Microsoft Graph returned a link outside GRAPH_API_ENDPOINT; "
                "it was not followed with the mailbox's token."
            )
        return url

    def _changes_from(
        self, items: list[dict], delta_link: str, since_iso: str | None, *, reset: bool
    ) -> Changes:
        since = parse_time(since_iso)
        received: dict[str, datetime | None] = {}
        for item in items:
            key = item.get("id")
            if not key or "@removed" in item:
                continue  # non-destructive: what was imported stays
            when = parse_time(item.get("receivedDateTime"))
            # Also on later rounds: an old message that was only marked read is
            # not new mail, and was outside the backfill window on purpose.
            if since and when and when < since:
                continue
            received[str(key)] = when  # a message changed twice in a round is listed once
        self._received.update(received)
        epoch = datetime.min.replace(tzinfo=UTC)
        keys = sorted(received, key=lambda key: (received[key] or epoch, key))
        return Changes(
            keys=keys, cursor={"delta_link": delta_link, "since": since_iso}, reset=reset
        )

    def keys_since(
        self, folder: FolderSpec, since: datetime | None, before: datetime | None = None
    ) -> list[str]:
        """Every message id in the folder received since ``since`` (reconciliation),
        or between it and ``before`` (older mail imported later)."""
        url = (
            f"{self.base}/mailFolders/{folder.name}/messages"
            f"?$select=id,receivedDateTime&$top={LIST_PAGE_SIZE}"
        )
        terms = [f"receivedDateTime ge {iso(since)}"] if since else []
        if before:
            # Whole seconds: up to a second more, so the moment ``before`` is in too.
            terms.append(f"receivedDateTime lt {iso(before + timedelta(seconds=1))}")
        if terms:
            url += "&$filter=" + quote(" and ".join(terms), safe=":")
        received: dict[str, datetime | None] = {}
        while url:
            response = self._request("GET", url, "list messages")
            if response.status_code != 200:
                raise failure(response, "list messages")
            page = json_of(response)
            for item in page.get("value") or []:
                if isinstance(item, dict) and item.get("id"):
                    received[str(item["id"])] = parse_time(item.get("receivedDateTime"))
            next_link = page.get("@odata.nextLink")
            url = self._checked_link(next_link) if next_link else ""
        self._received.update(received)
        epoch = datetime.min.replace(tzinfo=UTC)
        return sorted(received, key=lambda key: (received[key] or epoch, key))

    def fetch(self, folder: FolderSpec, keys: list[str]) -> Iterator[RawMessage]:
        """Raw MIME of each message, in order, up to MAX_CONCURRENT_REQUESTS at a time."""
        for start in range(0, len(keys), FETCH_WINDOW):
            yield from self._fetch_window(keys[start : start + FETCH_WINDOW])

    def _fetch_window(self, keys: list[str]) -> Iterator[RawMessage]:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                max_workers=MAX_CONCURRENT_REQUESTS, thread_name_prefix="graph-fetch"
            )
        token = self._token

        def download(key: str) -> requests.Response:
            # Pool threads only do HTTP; tokens (the database) are handled in this thread.
            return self._throttled("GET", self._message_url(key, "/$value"), token)

        try:
            responses = list(self._pool.map(download, keys))
        except requests.RequestException as exc:
            raise network_failure(exc, "download messages") from exc
        if any(response.status_code == 401 for response in responses):
            self._token = self._renew_token(token)
            for index, response in enumerate(responses):
                if response.status_code == 401:
                    try:
                        responses[index] = self._throttled(
                            "GET", self._message_url(keys[index], "/$value"), self._token
                        )
                    except requests.RequestException as exc:
                        raise network_failure(exc, "download a message") from exc
                    if responses[index].status_code == 401:
                        self._give_up_auth()
        for key, response in zip(keys, responses, strict=True):
            if response.status_code == 404:
                continue  # deleted since it was listed
            if response.status_code != 200:
                raise failure(response, "download a message")
            yield RawMessage(key=key, raw=response.content, internal_date=self._received.get(key))

    def find_message_id(self, folder: FolderSpec, message_id: str) -> bool:
        expression = "internetMessageId eq '{}'".format(message_id.replace("'", "''"))
        url = (
            f"{self.base}/mailFolders/{folder.name}/messages"
            f"?$filter={quote(expression, safe='')}&$select=id,internetMessageId"
        )
        response = self._request("GET", url, "look for a sent message")
        if response.status_code != 200:
            raise failure(response, "look for a sent message")
        return bool(json_of(response).get("value"))
