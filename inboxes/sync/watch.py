"""Push for IMAP: one IDLE connection per mailbox, a sync the moment mail arrives.

``manage.py watch_mailboxes`` runs this beside the workers, as many processes on as
many machines as wanted: each holds the mailboxes it leases
(inboxes/sync/watch_leases.py), one small-stack thread per mailbox blocked in IDLE
(threads were measured to cost ~85 KiB per connection against ~295 KiB on asyncio
streams: bench/watcher_memory.py). IDLE is only a trigger (the sync decides what is
new from its cursor), so a missed push costs at most one poll, never a message.

The IDLE threads touch the database only to read their mailbox and to run the sync
a push triggered; the lease round (every ``claim_seconds``) does the rest in a few
queries for all mailboxes: claiming, giving back, renewing, and ``pushed_until``
for the mailboxes whose IDLE is live (``push_lapsed`` with the reason when a server
has no IDLE or the login fails). While ``on_change`` runs, the watcher's logged-in
connection is lent to a sync of the mailbox in this process (``sync_in_watcher``): a
push then costs no login. At most ``sync_concurrency`` pushed syncs run at once.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from uuid import UUID

from django.conf import settings
from django.db import close_old_connections, connections

from inboxes.models import FolderRole, Mailbox, MailboxFolder, Provider
from inboxes.providers.base import FolderSpec, ProviderError
from inboxes.providers.imap.session import ImapSession, lent_to_syncs
from inboxes.push.state import push_lapsed
from inboxes.sync import watch_leases
from inboxes.sync.lease import syncing_as_watcher
from inboxes.sync.schedule import mailbox_syncable

log = logging.getLogger(__name__)

# A thread per mailbox spends its life in IDLE: a small stack is plenty (the
# pushed sync runs on it too; half a MiB of address space, pages touched only).
THREAD_STACK_BYTES = 512 * 1024
RETRY_SECONDS = 30
# Threads reading their mailbox and logging in at the same time (each holds a database
# connection only meanwhile): bounded, so that starting with thousands of mailboxes
# needs neither thousands of database connections nor a storm of logins.
_OPENING = threading.BoundedSemaphore(16)


def _still_watched(mailbox_id: UUID | str) -> bool:
    close_old_connections()
    mailbox = Mailbox.objects.select_related("owner").filter(pk=mailbox_id).first()
    return (
        mailbox is not None and mailbox.provider == Provider.IMAP and not mailbox_syncable(mailbox)
    )


class WatchHandle:
    """What the watcher keeps of one mailbox's thread: it can stop it, even in IDLE."""

    def __init__(self, stop: threading.Event | None = None) -> None:
        self.stop = stop or threading.Event()
        self.session: ImapSession | None = None
        self.idling = False  # IDLE is live (the lease round sets pushed_until)
        self.lapsed: str | None = None  # why push is off, for the lease round to record
        self.no_idle = False  # the server has no IDLE: the thread ended, the poll covers it
        self.thread: threading.Thread | None = None

    def halt(self) -> None:
        """Stop the thread now: a thread blocked in IDLE wakes when its socket closes."""
        self.stop.set()
        session = self.session
        client = session.client if session is not None else None
        if client is not None:
            with contextlib.suppress(Exception):
                client._imap.sock.shutdown(socket.SHUT_RDWR)


def _inbox_cursor(mailbox_id: UUID | str) -> dict:
    cursor = (
        MailboxFolder.objects.filter(mailbox_id=mailbox_id, role=FolderRole.INBOX)
        .values_list("cursor", flat=True)
        .first()
    )
    return cursor if isinstance(cursor, dict) else {}


def watch_mailbox(
    mailbox_id: UUID | str,
    on_change: Callable[[str], None],
    stop: threading.Event,
    handle: WatchHandle | None = None,
) -> None:
    """IDLE on the mailbox's INBOX until ``stop`` is set or it stops being syncable.

    Each IDLE lasts at most IDLE_RENEW_SECONDS (then DONE and IDLE again, well under
    the 29 minutes of RFC 2177); between pushes the thread holds no database
    connection."""
    handle = handle or WatchHandle(stop)
    inbox = FolderSpec(FolderRole.INBOX, "INBOX")
    try:
        while not stop.is_set():
            try:
                with contextlib.ExitStack() as stack:
                    with _OPENING:  # a thousand threads starting: a few logins at a time
                        if not _still_watched(mailbox_id):
                            return
                        mailbox = Mailbox.objects.get(pk=mailbox_id)
                        # Read now, on this connection: after the login it would take
                        # another (a PostgreSQL backend started per mailbox opened).
                        # A sync that moves it meanwhile costs one needless catch-up.
                        cursor = _inbox_cursor(mailbox_id)
                        connections.close_all()
                        session = ImapSession(mailbox, timeout=settings.IDLE_RENEW_SECONDS + 60)
                        handle.session = session
                        stack.enter_context(session)
                    if not session.supports_idle():
                        log.info("mailbox %s: no IDLE, the poll covers it", mailbox_id)
                        handle.lapsed = "the IMAP server does not offer IDLE"
                        handle.no_idle = True
                        return
                    if not session.caught_up(inbox, cursor):
                        with lent_to_syncs(session):
                            on_change(str(mailbox_id))  # what came while nobody watched
                    connections.close_all()  # no database connection held while idle
                    handle.lapsed = None
                    while not stop.is_set() and session.client is not None:
                        # (client None: a sync over it failed; log in anew)
                        handle.idling = True
                        changed = session.wait_for_change(inbox, settings.IDLE_RENEW_SECONDS)
                        if changed and not stop.is_set():
                            with lent_to_syncs(session):
                                on_change(str(mailbox_id))
                            connections.close_all()
            except ProviderError as exc:
                handle.idling = False
                connections.close_all()
                if stop.is_set():
                    return
                log.warning(
                    "mailbox %s: IDLE failed (%s); retrying in %s s", mailbox_id, exc, RETRY_SECONDS
                )
                handle.lapsed = f"IDLE failed: {exc}"
                stop.wait(RETRY_SECONDS)
            finally:
                handle.idling = False
                handle.session = None
    finally:
        connections.close_all()  # this thread's own database connection


class Watcher:
    """Holds an IDLE thread for each mailbox this process leases."""

    def __init__(
        self,
        on_change: Callable[[str], None],
        *,
        name: str | None = None,
        capacity: int = 5000,
        sync_concurrency: int = 4,
    ) -> None:
        self.name = name or watch_leases.new_watcher_name()
        self.capacity = capacity
        self.stop = threading.Event()
        self.handles: dict[str, WatchHandle] = {}
        self._syncs = threading.BoundedSemaphore(sync_concurrency)
        self._on_change = on_change
        self._renewed = 0.0
        self._recorded_lapses: dict[str, str] = {}
        self._pushed: set[str] = set()
        self._orphans: set[str] = set()
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="orphan-sync")

    def on_change(self, mailbox_id: str) -> None:
        # bounded: 1,000 pushes at once do not start 1,000 syncs
        with self._syncs, syncing_as_watcher(self.name):
            self._on_change(mailbox_id)

    # -- one round ------------------------------------------------------------------------

    def refresh(self) -> None:
        close_old_connections()
        keep, claimed, gone = watch_leases.plan_round(self.name, self.capacity, set(self.handles))
        for mailbox_id in gone | (set(self.handles) - keep):
            self._drop(mailbox_id)
        for mailbox_id in keep:
            handle = self.handles.get(mailbox_id)
            if handle is None or handle.thread is None or not handle.thread.is_alive():
                self._start(mailbox_id)
        if claimed:
            log.info("watcher %s: claimed %d mailboxes", self.name, len(claimed))
        watch_leases.free_dead_watchers_sync_leases(self.name)
        for mailbox_id in watch_leases.orphaned_requests(self.name):
            self._sync_orphan(mailbox_id)
        self._record_lapses()
        idling = {mailbox_id for mailbox_id, h in self.handles.items() if h.idling}
        due = time.monotonic() - self._renewed >= watch_leases.hold_seconds() / 3
        if due or claimed or idling - self._pushed:
            self.renew(idling)

    def renew(self, idling: set[str]) -> None:
        """Heartbeat, leases and pushed_until, all at once (a few UPDATEs)."""
        watch_leases.renew(self.name, self.capacity, idling=idling, rss_bytes=_rss_bytes())
        watch_leases.forget_dead_watchers()
        self._renewed = time.monotonic()
        self._pushed = idling

    def _sync_orphan(self, mailbox_id: str) -> None:
        """A sync was asked for while a process that died held the sync lease (a
        watcher killed mid-sync): run it here, over a fresh login."""
        if mailbox_id in self._orphans:
            return
        self._orphans.add(mailbox_id)

        def run() -> None:
            try:
                self.on_change(mailbox_id)
            finally:
                self._orphans.discard(mailbox_id)
                connections.close_all()

        self._pool.submit(run)

    def _record_lapses(self) -> None:
        for mailbox_id, handle in self.handles.items():
            why = handle.lapsed
            if why and self._recorded_lapses.get(mailbox_id) != why:
                push_lapsed(mailbox_id, why)
                self._recorded_lapses[mailbox_id] = why
            elif not why:
                self._recorded_lapses.pop(mailbox_id, None)

    def _start(self, mailbox_id: str) -> None:
        old = self.handles.get(mailbox_id)
        if old is not None and old.no_idle:
            return  # the server has no IDLE: the poll covers the mailbox
        handle = WatchHandle()
        previous = threading.stack_size(THREAD_STACK_BYTES)
        try:
            handle.thread = threading.Thread(
                target=watch_mailbox,
                args=(mailbox_id, self.on_change, handle.stop, handle),
                name=f"idle-{mailbox_id}",
                daemon=True,
            )
            handle.thread.start()
        finally:
            threading.stack_size(previous)
        self.handles[mailbox_id] = handle

    def _drop(self, mailbox_id: str) -> None:
        handle = self.handles.pop(mailbox_id, None)
        self._recorded_lapses.pop(mailbox_id, None)
        if handle is not None:
            handle.halt()

    # -- the process ----------------------------------------------------------------------

    def run(self, claim_seconds: float = watch_leases.CLAIM_ROUND_SECONDS) -> None:
        watch_leases.register(self.name, self.capacity)
        try:
            while not self.stop.is_set():
                try:
                    self.refresh()
                except Exception:  # the database away for a moment: try again next round
                    log.exception("watcher %s: lease round failed", self.name)
                    close_old_connections()
                self.stop.wait(claim_seconds)
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        for handle in self.handles.values():
            handle.halt()
        started = time.monotonic()
        for mailbox_id, handle in self.handles.items():
            if handle.thread is not None:
                handle.thread.join(timeout=5)
                if handle.thread.is_alive():
                    log.warning("watcher %s: mailbox %s did not stop", self.name, mailbox_id)
        log.info("watcher %s: stopped in %.1f s", self.name, time.monotonic() - started)
        self.handles.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)
        close_old_connections()
        watch_leases.retire(self.name)
        connections.close_all()


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as statm:
            import resource

            return int(statm.read().split()[1]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return 0
