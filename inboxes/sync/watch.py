"""Push for IMAP: one IDLE connection per mailbox, a sync the moment mail arrives.

``manage.py watch_mailboxes`` runs this beside the workers. IDLE is only a
trigger (the sync decides what is new from its cursor), so a missed push costs
at most one poll interval (SYNC_POLL_SECONDS, run by beat), never a message.
While ``on_change`` runs, the watcher's logged-in connection is lent to a sync
of the mailbox in this process (``--sync-here``): a push then costs no login.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from uuid import UUID

from django.conf import settings
from django.db import close_old_connections, connections

from inboxes.models import FolderRole, Mailbox, Provider
from inboxes.providers.base import FolderSpec, ProviderError
from inboxes.providers.imap.session import ImapSession, lent_to_syncs
from inboxes.sync.schedule import mailbox_syncable, mailboxes_syncable

log = logging.getLogger(__name__)

# How long one IDLE waits before we look at the mailbox's state again; well
# under the 29 minutes after which servers may drop an idle client.
IDLE_SLICE_SECONDS = 20


def _still_watched(mailbox_id: UUID | str) -> bool:
    close_old_connections()
    mailbox = Mailbox.objects.select_related("owner").filter(pk=mailbox_id).first()
    return (
        mailbox is not None and mailbox.provider == Provider.IMAP and not mailbox_syncable(mailbox)
    )


def watch_mailbox(
    mailbox_id: UUID | str, on_change: Callable[[str], None], stop: threading.Event
) -> None:
    """IDLE on the mailbox's INBOX until ``stop`` is set or it stops being syncable."""
    try:
        inbox = FolderSpec(FolderRole.INBOX, "INBOX")
        while not stop.is_set() and _still_watched(mailbox_id):
            try:
                mailbox = Mailbox.objects.get(pk=mailbox_id)
                with ImapSession(mailbox, timeout=IDLE_SLICE_SECONDS + 30) as session:
                    if not session.supports_idle():
                        log.info("mailbox %s: no IDLE, the poll covers it", mailbox_id)
                        return
                    with lent_to_syncs(session):
                        on_change(str(mailbox_id))  # catch up on what came while not watching
                    started = time.monotonic()
                    while (
                        not stop.is_set()
                        and session.client is not None  # (a sync over it failed: log in anew)
                        and time.monotonic() - started < settings.IDLE_RENEW_SECONDS
                    ):
                        if session.wait_for_change(inbox, IDLE_SLICE_SECONDS):
                            with lent_to_syncs(session):
                                on_change(str(mailbox_id))
                        if not _still_watched(mailbox_id):
                            return
            except ProviderError as exc:
                log.warning("mailbox %s: IDLE failed (%s); retrying in 30 s", mailbox_id, exc)
                stop.wait(30)
    finally:
        connections.close_all()  # this thread's own database connection


class Watcher:
    """Keeps one watching thread per syncable IMAP mailbox."""

    def __init__(self, on_change: Callable[[str], None]) -> None:
        self.on_change = on_change
        self.stop = threading.Event()
        self.threads: dict[str, threading.Thread] = {}

    def refresh(self) -> None:
        close_old_connections()
        wanted = {
            str(pk)
            for pk in mailboxes_syncable()
            if Mailbox.objects.filter(pk=pk, provider=Provider.IMAP).exists()
        }
        for mailbox_id in wanted:
            thread = self.threads.get(mailbox_id)
            if thread is None or not thread.is_alive():
                thread = threading.Thread(
                    target=watch_mailbox,
                    args=(mailbox_id, self.on_change, self.stop),
                    name=f"idle-{mailbox_id}",
                    daemon=True,
                )
                thread.start()
                self.threads[mailbox_id] = thread

    def run(self, refresh_seconds: float = 15) -> None:
        while not self.stop.is_set():
            self.refresh()
            self.stop.wait(refresh_seconds)
