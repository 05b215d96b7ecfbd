"""Reading a Gmail mailbox: ``GmailSession`` (``MailSession``)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime

from googleapiclient.errors import HttpError

from inboxes.models import FolderRole, MailboxKind
from inboxes.providers.base import Changes, FolderSpec, RawMessage
from inboxes.providers.gmail.api import bare_message_id
from inboxes.providers.gmail.http import gmail_errors, status_of
from inboxes.providers.gmail.mailbox import GmailMailbox

log = logging.getLogger(__name__)

INBOX = "INBOX"
SENT = "SENT"

LIST_PAGE_SIZE = 500  # messages.list allows 500
HISTORY_PAGE_SIZE = 500
FETCH_BATCH_SIZE = 50  # Google: at most 100 per batch, 50 or fewer recommended
# About this many bytes of messages per batch request, by the sizes this session has
# seen (Gmail's lists and history give no sizes); a bigger message goes alone.
FETCH_BATCH_BYTES = 1536 * 1024


class GmailSession(GmailMailbox):
    """Reads one Gmail mailbox (``MailSession``); a context manager."""

    def folders(self) -> list[FolderSpec]:
        folders = [FolderSpec(FolderRole.INBOX, INBOX)]
        if self.mailbox.kind == MailboxKind.PERSONAL:
            folders.append(FolderSpec(FolderRole.SENT, SENT))
        return folders

    def sent_folder(self) -> FolderSpec | None:
        return FolderSpec(FolderRole.SENT, SENT)

    def changes(self, folder: FolderSpec, cursor: dict, since: datetime | None) -> Changes:
        history_id = str((cursor or {}).get("history_id") or "")
        with gmail_errors(f"list the changes in {folder.name}"):
            if history_id:
                try:
                    keys, latest = self._history(folder.name, history_id)
                except HttpError as exc:
                    if status_of(exc) != 404:
                        raise
                    # The history id expired: list everything again (reset).
                    log.info("gmail history %s expired for %s", history_id, self.mailbox.pk)
                else:
                    return Changes(
                        keys=keys,
                        cursor={"history_id": latest},
                        server_count=self._label_count(folder.name),
                    )
            # Taken before listing: what arrives during the listing is after it.
            start = str(self.api.read(self.api.users.getProfile(userId="me"))["historyId"])
            keys = self._list_ids(folder.name, since)
            return Changes(
                keys=keys,
                cursor={"history_id": start},
                reset=bool(history_id),
                server_count=self._label_count(folder.name),
            )

    def _history(self, label: str, start: str) -> tuple[list[str], str]:
        history = self.api.users.history()
        first = history.list(
            userId="me",
            startHistoryId=start,
            labelId=label,
            historyTypes=["messageAdded"],
            maxResults=HISTORY_PAGE_SIZE,
        )
        keys: dict[str, None] = {}  # ordered and deduplicated
        latest = int(start)
        for page in self.api.list_all(first, history.list_next):
            latest = max(latest, int(page.get("historyId", latest)))
            for record in page.get("history", []):
                for added in record.get("messagesAdded", []):
                    message = added.get("message", {})
                    labels = message.get("labelIds")
                    if message.get("id") and (labels is None or label in labels):
                        keys[message["id"]] = None
        return list(keys), str(latest)

    def _list_ids(
        self, label: str, since: datetime | None, before: datetime | None = None
    ) -> list[str]:
        messages = self.api.users.messages()
        terms = [f"after:{int(since.timestamp())}"] if since is not None else []
        if before is not None:
            # Whole seconds: up to a second more, so the moment ``before`` is in too.
            terms.append(f"before:{int(before.timestamp()) + 1}")
        query = " ".join(terms) or None
        first = messages.list(userId="me", labelIds=[label], q=query, maxResults=LIST_PAGE_SIZE)
        ids: dict[str, None] = {}
        for page in self.api.list_all(first, messages.list_next):
            for message in page.get("messages", []):
                ids[message["id"]] = None
        return list(reversed(ids))  # Gmail lists newest first

    def _label_count(self, label: str) -> int | None:
        try:
            return int(
                self.api.read(self.api.users.labels().get(userId="me", id=label))["messagesTotal"]
            )
        except (HttpError, KeyError, ValueError):
            return None  # only for the sync ledger; not worth failing a sync over

    def keys_since(
        self, folder: FolderSpec, since: datetime | None, before: datetime | None = None
    ) -> list[str]:
        with gmail_errors(f"list {folder.name}"):
            return self._list_ids(folder.name, since, before)

    def fetch(self, folder: FolderSpec, keys: list[str]) -> Iterator[RawMessage]:
        """The messages of ``keys`` as their batch answers come in (deleted ones left
        out): batches of at most FETCH_BATCH_SIZE and about FETCH_BATCH_BYTES, the
        next one asked for while this one is read and stored (api.py ``fetch_raw``)."""
        if not keys:
            return
        with gmail_errors(f"fetch messages from {folder.name}"):
            for found in self.api.fetch_raw(
                keys, batch_size=FETCH_BATCH_SIZE, batch_bytes=FETCH_BATCH_BYTES
            ):
                internal = found.internal_ms
                yield RawMessage(
                    key=found.id,
                    raw=found.raw,
                    internal_date=datetime.fromtimestamp(internal / 1000, tz=UTC)
                    if internal
                    else None,
                )
                del found

    def find_message_id(self, folder: FolderSpec, message_id: str) -> bool:
        bare = bare_message_id(message_id)
        if not bare:
            return False
        with gmail_errors(f"search {folder.name}"):
            found = self.api.read(
                self.api.users.messages().list(
                    userId="me",
                    labelIds=[folder.name],
                    q=f"rfc822msgid:{bare}",
                    includeSpamTrash=True,  # sent, then deleted at once, was still sent
                    maxResults=1,
                )
            )
        return bool(found.get("messages"))

    def store_sent_copy(self, raw: bytes) -> None:
        return None  # Gmail keeps what it sends in SENT by itself
