"""Copies of what was sent in the mailbox's Sent folder, as a mail client keeps.

Gmail and Microsoft 365 keep what they send by themselves; for IMAP mailboxes
the send run APPENDs the copies of a chunk over one session for the whole run
(``SentCopies``), and the sweeper stores any that are missing
(``outbox_store_sent_copy``). The next sync recognises a copy by its content.
"""

from __future__ import annotations

import contextlib
import imaplib
import logging
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, cast
from uuid import UUID

from django.db import connection

from inboxes.models import Mailbox, OutboxItem, Provider
from inboxes.outbox.claims import Claimed, raw_of
from inboxes.providers import open_session
from inboxes.providers.base import MailSession, ProviderError

if TYPE_CHECKING:
    from inboxes.providers.imap.session import ImapSession

log = logging.getLogger(__name__)

COPY_BATCH_BYTES = 8 * 1024 * 1024
# Sent copy batches (a chunk each) handed to the IMAP thread and not yet stored,
# before the run waits for the oldest: the IMAP server may fall behind for a while.
COPY_BATCHES_IN_FLIGHT = 3


def outbox_store_sent_copy(item_id: UUID | str) -> bool:
    """A copy in the mailbox's Sent folder, as a mail client keeps. Best effort:
    the sweeper tries again later; the next sync recognises the copy by content."""
    item = OutboxItem.objects.select_related("mailbox", "message").get(pk=item_id)
    if item.sent_copy_stored or item.mailbox.provider != Provider.IMAP:
        # Gmail and Microsoft 365 keep what they send in Sent by themselves.
        return item.sent_copy_stored
    try:
        with open_session(item.mailbox) as session:
            session.store_sent_copy(raw_of(item))
    except ProviderError as exc:
        log.warning("could not store the sent copy of %s: %s", item.pk, exc)
        return False
    OutboxItem.objects.filter(pk=item.pk).update(sent_copy_stored=True)
    return True


def append_sent_copies(session: ImapSession, raws: list[bytes]) -> None:
    """APPEND ``raws`` to the Sent folder of an open ImapSession: one MULTIAPPEND
    (RFC 3502: all or none) where the server offers it, else one APPEND after
    another over the same connection."""
    from imapclient.imapclient import SEEN

    from inboxes.providers.imap.session import imap_error

    if not raws:
        return
    name = session.sent_folder_name()
    client = session.client
    assert client is not None, "append_sent_copies needs an open session"
    try:
        if not name:
            # As a mail client does on its first send: make the Sent folder.
            name = "Sent"
            client.create_folder(name)
        if len(raws) > 1 and client.has_capability("MULTIAPPEND"):
            # imapclient hands a tagged NO back instead of raising it.
            typ, data = client.multiappend(name, [{"msg": raw, "flags": (SEEN,)} for raw in raws])
            if typ != "OK":
                raise imaplib.IMAP4.error(f"APPEND refused: {typ} {data}")
        else:
            for raw in raws:
                client.append(name, raw, flags=(SEEN,))
    except BaseException as exc:
        raise imap_error(exc) from exc


class SentCopies:
    """Sent copies of a run: one IMAP session, opened on first use, in a thread of
    its own, so a chunk's MULTIAPPEND runs while the next chunks go out over SMTP
    (both mostly wait on their server). The run does not wait for a batch until
    ``COPY_BATCHES_IN_FLIGHT`` are handed over and not done (then for the oldest);
    the ``sent_copy_stored`` UPDATE of a batch that is done is made here, in the
    run's thread."""

    def __init__(self, mailbox: Mailbox) -> None:
        self.mailbox = mailbox
        self.wanted = mailbox.provider == Provider.IMAP  # the APIs keep their own
        self.pending: list[tuple[UUID, bytes]] = []
        self.pending_bytes = 0
        self.session: ImapSession | None = None
        self.gave_up = False
        self.stored = 0
        self._thread: ThreadPoolExecutor | None = None
        self._entered = False
        self._in_flight: list[tuple[Future, list[UUID]]] = []

    def add(self, entry: Claimed, raw: bytes) -> None:
        if not self.wanted or self.gave_up:
            return
        self.pending.append((entry.pk, raw))
        self.pending_bytes += len(raw)
        if self.pending_bytes >= COPY_BATCH_BYTES:
            self.store()

    def store(self) -> None:
        """Hand the pending copies to the IMAP thread (first waiting for the oldest
        batch if ``COPY_BATCHES_IN_FLIGHT`` are not done yet)."""
        batch, self.pending, self.pending_bytes = self.pending, [], 0
        self._settle(keep=COPY_BATCHES_IN_FLIGHT - 1)
        if not batch or self.gave_up:
            return
        if self._thread is None:
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sent-copies")
            # Not connected yet: that happens in the thread. (IMAP mailboxes only: wanted.)
            self.session = cast("ImapSession", open_session(self.mailbox))
        raws = [raw for _, raw in batch]
        self._in_flight.append((self._thread.submit(self._append, raws), [pk for pk, _ in batch]))

    def _append(self, raws: list[bytes]) -> None:
        assert self.session is not None  # store() opened it before handing work here
        try:
            if not self._entered:
                self.session.__enter__()
                self._entered = True
            append_sent_copies(self.session, raws)
        finally:
            connection.close()  # a token refresh at login may have used the database

    def _settle(self, keep: int) -> None:
        """Record the batches that are done; wait for the oldest ones until at most
        ``keep`` are left in flight."""
        stored: list[UUID] = []
        while self._in_flight and (self._in_flight[0][0].done() or len(self._in_flight) > keep):
            future, ids = self._in_flight.pop(0)
            try:
                future.result()
            except ProviderError as exc:
                # The sweeper tries again later (sent_copy_stored stays false).
                log.warning(
                    "send run %s: could not store %d Sent copies: %s",
                    self.mailbox.pk,
                    len(ids),
                    exc,
                )
                self.gave_up = True
                continue
            stored += ids
        if stored:
            OutboxItem.objects.filter(pk__in=stored).update(sent_copy_stored=True)
            self.stored += len(stored)

    def close(self) -> None:
        """Wait for the batches in flight and log out."""
        try:
            self._settle(keep=0)
        finally:
            if self._thread is not None:
                session, self.session = self.session, None
                if self._entered and session is not None:
                    self._thread.submit(_quietly_exit, session).result()
                self._thread.shutdown(wait=True)
                self._thread = None


def _quietly_exit(session: MailSession) -> None:
    with contextlib.suppress(Exception):
        session.__exit__(None, None, None)
