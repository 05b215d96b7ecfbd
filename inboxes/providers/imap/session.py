"""Reading an IMAP mailbox: ``ImapSession``, and the IDLE watcher's session lent to syncs.

Reading is non-destructive: folders are selected read-only and messages are
fetched with BODY.PEEK[], so no flag changes and nothing moves or is deleted.
Keys are ``uidvalidity:uid``: a UID means nothing once the folder's UIDVALIDITY
changes, and the cursor then resets (the sync service deduplicates by content).
"""

from __future__ import annotations

import contextlib
import imaplib
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from datetime import datetime

import imapclient
from imapclient.exceptions import IMAPClientError, LoginError
from imapclient.imapclient import SEEN, SENT

from inboxes import netguard
from inboxes.models import AuthMethod, FolderRole, Mailbox, MailboxKind
from inboxes.providers.base import Changes, FolderSpec, ProviderError, RawMessage
from inboxes.providers.imap.auth import (
    TokenSource,
    imap_xoauth2_attempt,
    imap_xoauth2_refusal,
    mailbox_servers,
    xoauth2_login,
)
from inboxes.providers.imap.connection import open_imap, server_text

# Fetch at most this many messages, or about this many bytes, per round trip:
# bounded memory whatever the mailbox holds (a bigger message comes alone). The
# sync ingests batches of the same bounds (inboxes/sync/batches.py), so each round trip
# is one ingest batch.
FETCH_BATCH_MESSAGES = 100
FETCH_BATCH_BYTES = 1536 * 1024
SENT_FOLDER_FALLBACKS = ("Sent", "Sent Items", "Sent Messages", "INBOX.Sent", "[Gmail]/Sent Mail")

_TRANSIENT = (OSError, socket.timeout, ssl.SSLError, imaplib.IMAP4.abort, EOFError)


def imap_error(exc: BaseException) -> ProviderError:
    """Map an exception from imapclient/the network onto our one error type."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, LoginError):
        return ProviderError(f"IMAP login failed: {server_text(exc)}", permanent=True)
    if isinstance(exc, netguard.HostNotAllowed):
        return ProviderError(str(exc), permanent=True)
    if isinstance(exc, netguard.HostNotFound):
        return ProviderError(str(exc))
    if isinstance(exc, _TRANSIENT):
        return ProviderError(f"IMAP connection problem: {exc or type(exc).__name__}")
    if isinstance(exc, IMAPClientError):
        return ProviderError(f"IMAP server error: {server_text(exc)}")
    return ProviderError(f"IMAP error: {exc!r}")


def _uid_of(key: str) -> int:
    return int(key.rsplit(":", 1)[1])


class ImapSession:
    """A logged-in IMAP connection for one mailbox (a context manager)."""

    def __init__(
        self,
        mailbox: Mailbox,
        *,
        timeout: float | None = None,
        token_source: TokenSource | None = None,
    ) -> None:
        """``token_source`` replaces the stored OAuth tokens of an XOAUTH2 mailbox."""
        self.mailbox = mailbox
        self._server, _ = mailbox_servers(mailbox)
        self._timeout = timeout
        self._token_source = token_source
        self.client: imapclient.IMAPClient | None = None
        self._selected: str | None = None
        self._watched_uidnext: int | None = None
        self._reused = False  # lent by the watcher, no command run since

    def __enter__(self) -> ImapSession:
        try:
            self.client = open_imap(self._server, self._timeout)
            self._login(self.client)
            if self.client.has_capability("CONDSTORE"):
                with contextlib.suppress(IMAPClientError):
                    self.client.enable("CONDSTORE")
        except BaseException as exc:
            self._close()
            raise imap_error(exc) from exc
        return self

    def _login(self, client: imapclient.IMAPClient) -> None:
        username = self._server.username
        if self.mailbox.auth_method != AuthMethod.XOAUTH2:
            client.login(username, self._server.password)
            return
        if not client.has_capability("AUTH=XOAUTH2"):
            raise ProviderError("The IMAP server does not offer XOAUTH2 sign-in.", permanent=True)
        xoauth2_login(
            self.mailbox,
            "IMAP",
            self._token_source,
            lambda token: imap_xoauth2_attempt(client, username, token),
            imap_xoauth2_refusal,
        )

    def __exit__(self, *exc_info: object) -> None:
        self._close()

    def _close(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.client.logout()
            with contextlib.suppress(Exception):
                self.client.shutdown()
            self.client = None

    @property
    def fingerprint(self) -> tuple:
        """What the login depends on: a lent session serves a sync only while it is unchanged."""
        return (str(self.mailbox.pk), self.mailbox.auth_method, self._server)

    # --- folders -------------------------------------------------------------------------

    def folders(self) -> list[FolderSpec]:
        folders = [FolderSpec(FolderRole.INBOX, "INBOX")]
        if self.mailbox.kind == MailboxKind.PERSONAL:
            sent = self.sent_folder_name()
            if sent:
                folders.append(FolderSpec(FolderRole.SENT, sent))
        return folders

    def sent_folder(self) -> FolderSpec | None:
        name = self.sent_folder_name()
        return FolderSpec(FolderRole.SENT, name) if name else None

    def sent_folder_name(self) -> str | None:
        assert self.client is not None
        try:
            special = self.client.find_special_folder(SENT)
            if special:
                return special
            names = {server_text(name) for _flags, _delim, name in self.client.list_folders()}
        except BaseException as exc:
            raise imap_error(exc) from exc
        return next((name for name in SENT_FOLDER_FALLBACKS if name in names), None)

    def _select(self, name: str) -> dict:
        assert self.client is not None
        try:
            info = self.client.select_folder(name, readonly=True)
        except Exception:
            if not self._reused:
                raise
            # A session logged in long ago may hold server state that went stale
            # meanwhile (a folder restored under it): one fresh login before giving up.
            self._reused = False
            self._close()
            self.__enter__()
            info = self.client.select_folder(name, readonly=True)
        self._reused = False
        self._selected = name
        return info

    # --- reading --------------------------------------------------------------------------

    def changes(self, folder: FolderSpec, cursor: dict, since: datetime | None) -> Changes:
        try:
            return self._changes(folder, cursor, since)
        except BaseException as exc:
            raise imap_error(exc) from exc

    def _changes(self, folder: FolderSpec, cursor: dict, since: datetime | None) -> Changes:
        assert self.client is not None
        info = self._select(folder.name)
        uidvalidity = int(info[b"UIDVALIDITY"])
        uidnext = int(info.get(b"UIDNEXT", 0) or 0)
        modseq = int(info[b"HIGHESTMODSEQ"]) if b"HIGHESTMODSEQ" in info else None
        exists = int(info.get(b"EXISTS", 0))
        reset = bool(cursor) and cursor.get("uidvalidity") != uidvalidity
        last_uid = 0 if reset or not cursor else int(cursor.get("last_uid", 0))

        def cursor_for(uid: int) -> dict:
            return {
                "uidvalidity": uidvalidity,
                "last_uid": uid,
                "uidnext": uidnext,
                "modseq": modseq,
            }

        unchanged = (
            cursor
            and not reset
            and uidnext
            and cursor.get("uidnext") == uidnext
            and (modseq is None or cursor.get("modseq") == modseq)
        )
        if unchanged or exists == 0:
            return Changes(
                keys=[], cursor=cursor_for(max(last_uid, uidnext - 1, 0)), server_count=exists
            )
        if last_uid:
            uids = [
                uid for uid in self.client.search(["UID", f"{last_uid + 1}:*"]) if uid > last_uid
            ]
        elif since is not None:
            uids = self.client.search(["SINCE", since.date()])
        else:
            uids = self.client.search("ALL")
        uids = sorted(uids)
        final = cursor_for(max([last_uid, *uids]))
        return Changes(
            keys=[f"{uidvalidity}:{uid}" for uid in uids],
            cursor=final,
            reset=reset,
            server_count=exists,
            # A partial cursor must not carry the folder's UIDNEXT/HIGHESTMODSEQ: with
            # them, a sync interrupted here would next find the folder "unchanged"
            # and never fetch the rest.
            partial_cursor=lambda key: {
                **cursor_for(_uid_of(key)),
                "uidnext": None,
                "modseq": None,
            },
        )

    def keys_since(
        self, folder: FolderSpec, since: datetime | None, before: datetime | None = None
    ) -> list[str]:
        """Every message key the server holds in the folder since ``since`` (for
        reconciliation), or between it and ``before`` (older mail imported later).
        IMAP searches by day: BEFORE leaves out the whole day of ``before``, which
        the window that starts at ``before`` (SINCE that day) holds."""
        try:
            info = self._select(folder.name)
            assert self.client is not None
            criteria: list | str = [
                *(["SINCE", since.date()] if since else []),
                *(["BEFORE", before.date()] if before else []),
            ] or "ALL"
            uidvalidity = int(info[b"UIDVALIDITY"])
            return [f"{uidvalidity}:{uid}" for uid in sorted(self.client.search(criteria))]
        except BaseException as exc:
            raise imap_error(exc) from exc

    def fetch(self, folder: FolderSpec, keys: list[str]) -> Iterator[RawMessage]:
        """Raw messages in batches bounded by count and size, without touching flags."""
        for batch in self.fetch_batches(folder, keys):
            yield from batch

    def fetch_batches(self, folder: FolderSpec, keys: list[str]) -> Iterator[list[RawMessage]]:
        """The messages of ``keys``, one list per round trip (at most FETCH_BATCH_MESSAGES
        or about FETCH_BATCH_BYTES; a bigger message alone), each as soon as it is in."""
        if not keys:
            return
        assert self.client is not None
        try:
            if self._selected != folder.name:
                self._select(folder.name)
            uids = [_uid_of(key) for key in keys]
            prefix = keys[0].rsplit(":", 1)[0]
            sizes = self.client.fetch(uids, ["RFC822.SIZE"])
            batch: list[int] = []
            batch_bytes = 0
            for uid in uids:
                if uid not in sizes:
                    continue  # expunged since it was listed
                size = int(sizes[uid].get(b"RFC822.SIZE", 0))
                if batch and (
                    len(batch) >= FETCH_BATCH_MESSAGES or batch_bytes + size > FETCH_BATCH_BYTES
                ):
                    yield self._fetch_batch(prefix, batch)
                    batch, batch_bytes = [], 0
                batch.append(uid)
                batch_bytes += size
            if batch:
                yield self._fetch_batch(prefix, batch)
        except (ProviderError, GeneratorExit):
            raise
        except BaseException as exc:
            raise imap_error(exc) from exc

    def _fetch_batch(self, prefix: str, uids: list[int]) -> list[RawMessage]:
        assert self.client is not None
        response = self.client.fetch(uids, ["BODY.PEEK[]", "INTERNALDATE"])
        batch = []
        for uid in uids:
            data = response.pop(uid, None)
            if data is None or b"BODY[]" not in data:
                continue
            batch.append(
                RawMessage(
                    key=f"{prefix}:{uid}",
                    raw=data[b"BODY[]"],
                    internal_date=data.get(b"INTERNALDATE"),
                )
            )
        return batch

    def find_message_id(self, folder: FolderSpec, message_id: str) -> bool:
        try:
            self._select(folder.name)
            assert self.client is not None
            return bool(self.client.search(["HEADER", "Message-ID", message_id]))
        except BaseException as exc:
            raise imap_error(exc) from exc

    def store_sent_copy(self, raw: bytes) -> None:
        """Append what we sent to the Sent folder, as a mail client would."""
        name = self.sent_folder_name()
        try:
            assert self.client is not None
            if not name:
                # As a mail client does on its first send: make the Sent folder.
                name = "Sent"
                self.client.create_folder(name)
            self.client.append(name, raw, flags=(SEEN,))
        except BaseException as exc:
            raise imap_error(exc) from exc

    # --- push ---------------------------------------------------------------------------------

    def supports_idle(self) -> bool:
        return bool(self.client and self.client.has_capability("IDLE"))

    def caught_up(self, folder: FolderSpec, cursor: dict) -> bool:
        """Whether the stored cursor already covers the folder (same UIDVALIDITY,
        UIDNEXT and, with CONDSTORE, HIGHESTMODSEQ), so a watcher taking the mailbox
        over needs no catch-up sync. Remembers the UIDNEXT it saw, so that mail
        arriving from now on counts as a change at the first ``wait_for_change``."""
        assert self.client is not None
        try:
            info = self._select(folder.name)
        except BaseException as exc:
            raise imap_error(exc) from exc
        uidnext = int(info.get(b"UIDNEXT", 0) or 0)
        modseq = int(info[b"HIGHESTMODSEQ"]) if b"HIGHESTMODSEQ" in info else None
        self._watched_uidnext = uidnext
        return bool(
            cursor
            and uidnext
            and cursor.get("uidvalidity") == int(info[b"UIDVALIDITY"])
            and cursor.get("uidnext") == uidnext
            and (modseq is None or cursor.get("modseq") == modseq)
        )

    def wait_for_change(self, folder: FolderSpec, seconds: float) -> bool:
        """IDLE on the folder until the server reports something or time runs out.

        Mail that arrives after a sync listed the folder but before we are back in
        IDLE is already counted in our SELECT, so IDLE would never report it: the
        UIDNEXT of the last SELECT (or of ``caught_up``, before the start-up catch-up)
        is remembered, and a move counts as a change at once, at the price of one
        extra, usually empty, sync per burst.
        """
        assert self.client is not None
        try:
            info = self._select(folder.name)
            uidnext = int(info.get(b"UIDNEXT", 0) or 0)
            previous, self._watched_uidnext = self._watched_uidnext, uidnext
            if previous is None or uidnext != previous:
                return True
            deadline = time.monotonic() + seconds
            self.client.idle()
            try:
                # Wait out the whole IDLE: "* OK Still here" and flag changes are no news.
                # imapclient answers a closed connection with nothing, at once, and so
                # it does once for TLS records without data (a TLS 1.3 session ticket):
                # nothing three times running before the time is up means closed.
                empty = 0
                while (left := deadline - time.monotonic()) > 0:
                    responses = self.client.idle_check(timeout=left)
                    if any(_new_mail(item) for item in responses):
                        return True
                    early = not responses and deadline - time.monotonic() > 0.05
                    empty = empty + 1 if early else 0
                    if empty >= 3:
                        raise imaplib.IMAP4.abort("the server closed the connection")
            finally:
                _, responses = self.client.idle_done()
            return any(_new_mail(item) for item in responses)
        except BaseException as exc:
            raise imap_error(exc) from exc


def _new_mail(item: object) -> bool:
    return isinstance(item, tuple) and len(item) > 1 and item[1] in (b"EXISTS", b"RECENT")


# --- The watcher's session, lent to the syncs it triggers ------------------------------------------

# A sync of a mailbox with little new is mostly fixed cost, and a fresh connection
# (TCP, TLS, LOGIN, ENABLE) is the biggest part of it. The IDLE watcher is logged
# in already: while it is out of IDLE and waits for the sync a push triggered (run
# in its own process), that sync borrows its connection. Only then: a session kept
# between syncs in a worker would hide a password changed on the server (Dovecot
# keeps a logged-in session) until it happens to drop, where a fresh login shows
# it at the next sync.


class _LentSessions:
    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._lent: dict[str, ImapSession] = {}
        self._busy: set[str] = set()

    def lend(self, session: ImapSession) -> None:
        with self._lock:
            self._lent[session.fingerprint[0]] = session

    def take_back(self, session: ImapSession) -> None:
        key = session.fingerprint[0]
        with self._lock:
            while key in self._busy:  # a sync still uses it: wait for its end
                self._lock.wait()
            if self._lent.get(key) is session:
                del self._lent[key]

    def borrow(self, fingerprint: tuple) -> ImapSession | None:
        key = fingerprint[0]
        with self._lock:
            session = self._lent.get(key)
            if session is None or key in self._busy or session.client is None:
                return None
            if session.fingerprint != fingerprint:
                return None  # the settings changed since the watcher logged in
            self._busy.add(key)
            return session

    def give_back(self, session: ImapSession) -> None:
        with self._lock:
            self._busy.discard(session.fingerprint[0])
            self._lock.notify_all()


_lent = _LentSessions()


@contextlib.contextmanager
def lent_to_syncs(session: ImapSession) -> Iterator[None]:
    """While inside, a sync of the session's mailbox in this process runs over it."""
    _lent.lend(session)
    try:
        yield
    finally:
        _lent.take_back(session)


@contextlib.contextmanager
def sync_session(mailbox: Mailbox) -> Iterator[ImapSession]:
    """The watcher's session when it lends it (see ``lent_to_syncs``), else a new one.

    A borrowed session that fails is closed: the watcher then logs in anew."""
    session = ImapSession(mailbox)
    borrowed = _lent.borrow(session.fingerprint)
    if borrowed is None:
        with session:
            yield session
        return
    borrowed._reused = True
    try:
        yield borrowed
    except BaseException:
        borrowed._close()
        raise
    finally:
        _lent.give_back(borrowed)
