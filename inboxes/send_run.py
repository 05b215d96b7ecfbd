"""The per-mailbox send run: the outbox's due items over one connection.

``outbox_send_run(mailbox_id)`` (task ``send_outbox``) claims the mailbox's due
items ``CLAIM_CHUNK`` at a time in one statement, oldest first, and sends them
over one SMTP connection (or one API client for Gmail and Microsoft 365), then
stores the Sent copies of the chunk over one IMAP session for the whole run.
The exactly-once rules and the window are in ``inboxes/sending.py``'s
docstring; this module keeps them with less work per item:

- the claim returns what the send needs (envelope, recipients, the raw file's
  name and the Message-ID) in the same statement, so there is no read per item
  before the send;
- ``data_started_at`` of a window of ``SEND_WINDOW`` items and the sent marks
  of the window before go in one statement (``_commit_marks``), committed right
  before the DATA of the window's first item (the trade-off is in sending.py);
- a refused transaction (4xx/5xx before or at DATA) is settled for that item
  and the run goes on after an RSET; a connection dropped before DATA is
  reopened and the item sent on the new one; a drop after DATA leaves the item
  ``unknown`` (and looked up in Sent) as the per-item send does; the connection
  is renewed every ``RECONNECT_EVERY`` messages (servers cap messages per
  connection);
- the Sent copies of a chunk are APPENDed in one MULTIAPPEND where the server
  offers it (Dovecot does), one APPEND after another over the same session
  otherwise, and marked stored in one UPDATE; a failure leaves them to the
  sweeper.

API providers keep a committed ``data_started_at`` per item (their send is an
HTTP request that costs far more than the commit) and the per-item outcome code
of ``sending.send_claimed``; the run saves them the claim and connection set-up
per item.
"""

from __future__ import annotations

import contextlib
import json
import logging
import smtplib
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.core.files.storage import default_storage
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from conversations.models import Message
from inboxes import sending
from inboxes.models import Mailbox, OutboxItem, OutboxState, Provider
from inboxes.providers import open_session, open_transport
from inboxes.providers.base import ProviderError, SendOutcomeUnknown

log = logging.getLogger(__name__)

CLAIM_CHUNK = 100
# Items whose "DATA started" marks share one commit (see sending.py on the window).
SEND_WINDOW = 20
RECONNECT_EVERY = 100
# A run stops claiming after this long and hands over to a new run (task time limits).
RUN_MAX_SECONDS = 120
COPY_BATCH_BYTES = 8 * 1024 * 1024


@dataclass
class Claimed:
    """One claimed item: what its send needs, read in the claim's statement."""

    pk: uuid.UUID
    attempts: int
    envelope_from: str
    recipients: list[str]
    message_pk: uuid.UUID
    message_id: str
    raw_name: str


@dataclass
class RunResult:
    mailbox_id: str
    claimed: int = 0
    sent: int = 0
    failed: int = 0
    unknown: int = 0
    retrying: int = 0
    released: int = 0
    copies: int = 0
    connections: int = 0
    retry_in: int | None = None  # seconds until the first item put back for a retry is due
    states: dict[str, str] = field(default_factory=dict)

    def retry_at(self, countdown: int | None) -> None:
        if countdown is not None:
            self.retry_in = countdown if self.retry_in is None else min(self.retry_in, countdown)


# --- Claiming -----------------------------------------------------------------------------------


def claim_due(mailbox_id, limit: int) -> list[Claimed]:
    """Claim up to ``limit`` due items of the mailbox, oldest first (queued -> sending)."""
    now = timezone.now()
    if connection.vendor == "postgresql":
        return _claim_postgresql(mailbox_id, limit, now)
    return _claim_portable(mailbox_id, limit, now)


def _claim_postgresql(mailbox_id, limit: int, now: datetime) -> list[Claimed]:
    # SKIP LOCKED: two runs of one mailbox take disjoint items instead of waiting
    # for each other; a row another run has claimed and committed no longer
    # matches state = 'queued' when it is re-checked under the lock. The chosen
    # ids are MATERIALIZED: as "id IN (SELECT ... LIMIT n)" the planner may rescan
    # the subquery per row, which then sees this statement's own updates and
    # returns the next n, again and again: the LIMIT would not hold.
    items = OutboxItem._meta.db_table
    messages = Message._meta.db_table
    sql = f"""
        WITH due AS MATERIALIZED (
            SELECT id FROM {items}
             WHERE mailbox_id = %(mailbox)s AND state = %(queued)s
               AND (next_attempt_at IS NULL OR next_attempt_at <= %(now)s)
             ORDER BY created_at
             LIMIT %(limit)s
               FOR UPDATE SKIP LOCKED
        ), claimed AS (
            UPDATE {items} AS o
               SET state = %(sending)s, claimed_at = %(now)s, attempts = o.attempts + 1,
                   data_started_at = NULL
              FROM due
             WHERE o.id = due.id AND o.state = %(queued)s
            RETURNING o.id, o.attempts, o.envelope_from, o.recipients, o.message_id, o.created_at
        )
        SELECT c.id, c.attempts, c.envelope_from, c.recipients, c.message_id,
               m.message_id, m.raw
          FROM claimed c JOIN {messages} m ON m.id = c.message_id
         ORDER BY c.created_at, c.id
    """  # noqa: S608 - table names from the models; every value is a parameter
    params = {
        "sending": OutboxState.SENDING,
        "queued": OutboxState.QUEUED,
        "now": now,
        "mailbox": mailbox_id,
        "limit": limit,
    }
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    return [
        Claimed(
            pk=pk,
            attempts=attempts,
            envelope_from=envelope_from,
            # Django has psycopg hand jsonb over as text (JSONField parses it).
            recipients=json.loads(recipients) if isinstance(recipients, str) else recipients,
            message_pk=message_pk,
            message_id=message_id,
            raw_name=raw_name or "",
        )
        for pk, attempts, envelope_from, recipients, message_pk, message_id, raw_name in rows
    ]


def _claim_portable(mailbox_id, limit: int, now: datetime) -> list[Claimed]:
    """SQLite: one conditional UPDATE per candidate (writes are serialised there,
    so each claim is still atomic; a candidate someone else took is skipped)."""
    due = (
        OutboxItem.objects.filter(mailbox_id=mailbox_id, state=OutboxState.QUEUED)
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .order_by("created_at", "pk")
    )
    won = [
        pk
        for pk in due.values_list("pk", flat=True)[:limit]
        if OutboxItem.objects.filter(pk=pk, state=OutboxState.QUEUED).update(
            state=OutboxState.SENDING,
            claimed_at=now,
            attempts=F("attempts") + 1,
            data_started_at=None,
        )
    ]
    rows = (
        OutboxItem.objects.filter(pk__in=won)
        .order_by("created_at", "pk")
        .values_list(
            "pk",
            "attempts",
            "envelope_from",
            "recipients",
            "message_id",
            "message__message_id",
            "message__raw",
        )
    )
    return [
        Claimed(
            pk=pk,
            attempts=attempts,
            envelope_from=envelope_from,
            recipients=list(recipients or []),
            message_pk=message_pk,
            message_id=message_id,
            raw_name=raw_name or "",
        )
        for pk, attempts, envelope_from, recipients, message_pk, message_id, raw_name in rows
    ]


def _read_raw(entry: Claimed) -> bytes:
    with default_storage.open(entry.raw_name, "rb") as handle:
        return handle.read()


def release(entries: list[Claimed], *, next_attempt_at: datetime | None, detail: str) -> int:
    """Give claimed items that were not tried back (queued, the claim not counted)."""
    if not entries:
        return 0
    ours = Q()
    for entry in entries:
        ours |= Q(pk=entry.pk, attempts=entry.attempts)
    return OutboxItem.objects.filter(ours, state=OutboxState.SENDING).update(
        state=OutboxState.QUEUED,
        attempts=F("attempts") - 1,
        data_started_at=None,
        next_attempt_at=next_attempt_at,
        detail=detail[:4000],
    )


# --- The marks: "DATA started" and "sent", in one statement ---------------------------------------


def _commit_marks(sent: list[tuple[Claimed, str]], start: list[Claimed]) -> set:
    """Mark ``sent`` items sent and ``start`` items as having their data going out,
    in one autocommitted statement; returns the ids of ``start`` still ours (the
    fence: same claim, not yet started)."""
    now = timezone.now()
    if connection.vendor != "postgresql":
        with transaction.atomic():
            for entry, detail in sent:
                _mark_sent_portable(entry, detail, now)
            return {
                entry.pk
                for entry in start
                if OutboxItem.objects.filter(
                    pk=entry.pk,
                    state=OutboxState.SENDING,
                    attempts=entry.attempts,
                    data_started_at__isnull=True,
                ).update(data_started_at=now)
            }
    table = OutboxItem._meta.db_table
    # A data-modifying WITH runs whether or not the main query reads it. The sent
    # mark is not fenced: the server's 250 is the truth, also for an item the
    # sweeper has meanwhile called unknown (it had data_started_at, so it was
    # never handed to another claim).
    sql = f"""
        WITH sent AS (
            UPDATE {table} AS o SET state = %(sent_state)s, detail = v.detail, sent_at = %(now)s
              FROM unnest(%(sent_ids)s::uuid[], %(details)s::text[]) AS v(id, detail)
             WHERE o.id = v.id AND o.state IN (%(sending)s, %(unknown)s)
        )
        UPDATE {table} AS o SET data_started_at = %(now)s
          FROM unnest(%(start_ids)s::uuid[], %(attempts)s::integer[]) AS v(id, attempts)
         WHERE o.id = v.id AND o.state = %(sending)s AND o.attempts = v.attempts
           AND o.data_started_at IS NULL
        RETURNING o.id
    """  # noqa: S608 - the table name from the model; every value is a parameter
    params = {
        "sent_state": OutboxState.SENT,
        "sending": OutboxState.SENDING,
        "unknown": OutboxState.UNKNOWN,
        "now": now,
        "sent_ids": [entry.pk for entry, _ in sent],
        "details": [detail[:4000] for _, detail in sent],
        "start_ids": [entry.pk for entry in start],
        "attempts": [entry.attempts for entry in start],
    }
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {row[0] for row in cursor.fetchall()}


def _mark_sent_portable(entry: Claimed, detail: str, now: datetime) -> None:
    OutboxItem.objects.filter(
        pk=entry.pk, state__in=[OutboxState.SENDING, OutboxState.UNKNOWN]
    ).update(state=OutboxState.SENT, detail=detail[:4000], sent_at=now)


class _Marks:
    """The run's pending sent marks and the items whose data may go out."""

    def __init__(self, window: int) -> None:
        self.window = max(1, window)
        self.pending_sent: list[tuple[Claimed, str]] = []
        self.started: set = set()

    def before_data(self, entry: Claimed, upcoming: list[Claimed]) -> None:
        if entry.pk in self.started:
            return
        start = [entry, *upcoming[: self.window - 1]]
        won = _commit_marks(self.pending_sent, start)
        self.pending_sent.clear()
        self.started |= won
        if entry.pk not in won:
            raise sending.ClaimLost(str(entry.pk))

    def sent(self, entry: Claimed, detail: str) -> None:
        self.pending_sent.append((entry, detail))

    def flush(self) -> None:
        if self.pending_sent:
            _commit_marks(self.pending_sent, [])
            self.pending_sent.clear()


# --- Sent copies ------------------------------------------------------------------------------------


def append_sent_copies(session, raws: list[bytes]) -> None:
    """APPEND ``raws`` to the Sent folder of an open ImapSession: one MULTIAPPEND
    (RFC 3502: all or none) where the server offers it, else one APPEND after
    another over the same connection."""
    from imapclient.imapclient import SEEN

    from inboxes.providers.imap import imap_error

    if not raws:
        return
    name = session.sent_folder_name()
    client = session.client
    try:
        if not name:
            # As a mail client does on its first send: make the Sent folder.
            name = "Sent"
            client.create_folder(name)
        if len(raws) > 1 and client.has_capability("MULTIAPPEND"):
            client.multiappend(name, [{"msg": raw, "flags": (SEEN,)} for raw in raws])
        else:
            for raw in raws:
                client.append(name, raw, flags=(SEEN,))
    except BaseException as exc:
        raise imap_error(exc) from exc


class _SentCopies:
    """Sent copies of a run: one IMAP session, opened on first use, in a thread of
    its own, so a chunk's MULTIAPPEND runs while the next chunk goes out over SMTP
    (both mostly wait on their server). At most one batch is in flight; its
    ``sent_copy_stored`` UPDATE is made here, in the run's thread."""

    def __init__(self, mailbox: Mailbox) -> None:
        self.mailbox = mailbox
        self.wanted = mailbox.provider == Provider.IMAP  # the APIs keep their own
        self.pending: list[tuple[uuid.UUID, bytes]] = []
        self.pending_bytes = 0
        self.session = None
        self.gave_up = False
        self.stored = 0
        self._thread: ThreadPoolExecutor | None = None
        self._entered = False
        self._in_flight: tuple[Future, list[uuid.UUID]] | None = None

    def add(self, entry: Claimed, raw: bytes) -> None:
        if not self.wanted or self.gave_up:
            return
        self.pending.append((entry.pk, raw))
        self.pending_bytes += len(raw)
        if self.pending_bytes >= COPY_BATCH_BYTES:
            self.store()

    def store(self) -> None:
        """Hand the pending copies to the IMAP thread (after the previous batch is in)."""
        batch, self.pending, self.pending_bytes = self.pending, [], 0
        self._settle()
        if not batch or self.gave_up:
            return
        if self._thread is None:
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sent-copies")
            self.session = open_session(self.mailbox)  # connects in the thread
        raws = [raw for _, raw in batch]
        self._in_flight = (self._thread.submit(self._append, raws), [pk for pk, _ in batch])

    def _append(self, raws: list[bytes]) -> None:
        try:
            if not self._entered:
                self.session.__enter__()
                self._entered = True
            append_sent_copies(self.session, raws)
        finally:
            connection.close()  # a token refresh at login may have used the database

    def _settle(self) -> None:
        if self._in_flight is None:
            return
        future, ids = self._in_flight
        self._in_flight = None
        try:
            future.result()
        except ProviderError as exc:
            # The sweeper tries again later (sent_copy_stored stays false).
            log.warning(
                "send run %s: could not store %d Sent copies: %s", self.mailbox.pk, len(ids), exc
            )
            self.gave_up = True
            return
        OutboxItem.objects.filter(pk__in=ids).update(sent_copy_stored=True)
        self.stored += len(ids)

    def close(self) -> None:
        """Wait for the batch in flight and log out."""
        try:
            self._settle()
        finally:
            if self._thread is not None:
                session, self.session = self.session, None
                if self._entered:
                    self._thread.submit(_quietly_exit, session).result()
                self._thread.shutdown(wait=True)
                self._thread = None


def _quietly_exit(session) -> None:
    with contextlib.suppress(Exception):
        session.__exit__(None, None, None)


# --- The SMTP connection of a run -------------------------------------------------------------------


class _Link:
    """One open transport at a time: opened on first use, renewed after
    ``RECONNECT_EVERY`` messages or once it dropped."""

    def __init__(self, mailbox: Mailbox) -> None:
        self.mailbox = mailbox
        self.transport = None
        self.messages = 0
        self.opened = 0

    def get(self):
        if self.transport is not None and self.messages >= RECONNECT_EVERY:
            self.close()
        if self.transport is None:
            transport = open_transport(self.mailbox)
            self.transport = transport.__enter__()  # raises ProviderError
            self.messages = 0
            self.opened += 1
        return self.transport

    def reset(self) -> None:
        """After a refused transaction: RSET, or drop a connection that cannot."""
        smtp = getattr(self.transport, "smtp", None)
        if smtp is None:
            return
        try:
            code, _ = smtp.rset()
        except (smtplib.SMTPException, OSError):
            code = 0
        if code != 250:
            self.close()

    def close(self) -> None:
        if self.transport is not None:
            with contextlib.suppress(Exception):
                self.transport.__exit__(None, None, None)
            self.transport = None


def _dropped(exc: ProviderError) -> bool:
    """A failure before DATA because the connection went away (not a refusal)."""
    cause = exc.__cause__
    if isinstance(cause, smtplib.SMTPServerDisconnected):
        return True
    return isinstance(cause, OSError) and not isinstance(cause, smtplib.SMTPException)


# --- The run ------------------------------------------------------------------------------------------


def outbox_send_run(mailbox_id) -> RunResult:
    """Send the mailbox's due items until none is left (or ``RUN_MAX_SECONDS``,
    then a new run is asked for)."""
    mailbox = Mailbox.objects.get(pk=mailbox_id)
    result = RunResult(str(mailbox_id))
    sending.run_lease_hold(mailbox_id)
    deadline = time.monotonic() + RUN_MAX_SECONDS
    link = _Link(mailbox)
    copies = _SentCopies(mailbox)
    stopped = "error"  # until a pass ends: an exception lets go of the lease too
    try:
        while True:
            sending.run_requests_answered(mailbox_id)
            stopped = _claim_and_send(mailbox, result, link, copies, deadline)
            if stopped == "deadline":
                sending.enqueue_send_run(mailbox_id, force=True)
                break
            if stopped or not sending.run_lease_release(mailbox_id):
                break
    finally:
        link.close()
        copies.close()
        result.connections = link.opened
        result.copies = copies.stored
        if stopped:
            sending.run_lease_release(mailbox_id)
    return result


def _claim_and_send(mailbox, result, link, copies, deadline) -> str:
    """Claim and send chunks until none is due; "" or why the run stops early."""
    while True:
        if time.monotonic() > deadline:
            return "deadline"
        chunk = claim_due(mailbox.pk, CLAIM_CHUNK)
        if not chunk:
            return ""
        result.claimed += len(chunk)
        if mailbox.provider == Provider.IMAP:
            stopped = _send_chunk_smtp(mailbox, chunk, result, link, copies)
        else:
            stopped = _send_chunk_api(mailbox, chunk, result, link)
        copies.store()
        sending.run_lease_hold(mailbox.pk)
        if stopped:
            return stopped


def _send_chunk_smtp(mailbox, chunk: list[Claimed], result, link: _Link, copies) -> str:
    marks = _Marks(SEND_WINDOW)
    try:
        for index, entry in enumerate(chunk):
            raw = _read_raw(entry)
            upcoming = chunk[index + 1 :]
            for attempt in (1, 2):
                try:
                    transport = link.get()
                except ProviderError as exc:
                    # Connecting or signing in failed: nothing of these went out.
                    marks.flush()
                    _settle_all(chunk[index:], exc, mailbox, result)
                    return "connection"
                try:
                    answer = transport.send(
                        raw,
                        envelope_from=entry.envelope_from,
                        recipients=entry.recipients,
                        before_data=lambda entry=entry, upcoming=upcoming: marks.before_data(
                            entry, upcoming
                        ),
                    )
                except sending.ClaimLost:
                    log.warning("outbox %s: taken over before DATA; not sent here", entry.pk)
                    link.reset()
                    break
                except SendOutcomeUnknown as exc:
                    link.close()
                    marks.flush()
                    _unknown(entry, exc, result)
                    break
                except ProviderError as exc:
                    if _dropped(exc):
                        link.close()
                        if attempt == 1:
                            continue  # dropped before DATA: again on a new connection
                        # Dropped twice in a row: the server is going away; later.
                        marks.flush()
                        _settle_all(chunk[index:], exc, mailbox, result)
                        return "connection"
                    link.reset()
                    state, countdown = sending.settle_failure(
                        entry, exc, mailbox_address=mailbox.address
                    )
                    _count(result, entry, state, countdown)
                    break
                link.messages += 1
                marks.sent(entry, sending.sent_detail(answer))
                copies.add(entry, raw)
                result.sent += 1
                result.states[str(entry.pk)] = OutboxState.SENT
                break
    finally:
        # Also on the way out of an exception: what the server accepted is recorded.
        marks.flush()
    return ""


def _send_chunk_api(mailbox, chunk: list[Claimed], result, link: _Link) -> str:
    """Gmail and Microsoft 365: per item as ``sending.send_claimed``, one client."""
    for index, entry in enumerate(chunk):
        try:
            transport = link.get()
        except ProviderError as exc:
            _settle_all(chunk[index:], exc, mailbox, result)
            return "connection"
        item = OutboxItem.objects.select_related("mailbox", "message").get(pk=entry.pk)
        item.attempts = entry.attempts  # the fence is this run's claim
        try:
            state = sending.send_claimed(item, transport)
        except sending.SendLater as exc:
            # Rate limits and outages hit the whole mailbox: the rest waits as long.
            _count(result, entry, OutboxState.QUEUED, exc.countdown)
            result.released += release(
                chunk[index + 1 :],
                next_attempt_at=timezone.now() + timedelta(seconds=exc.countdown),
                detail=f"Waiting: {exc}",
            )
            return "later"
        _count(result, entry, state, None)
    return ""


def _settle_all(entries: list[Claimed], exc: ProviderError, mailbox, result) -> None:
    for entry in entries:
        state, countdown = sending.settle_failure(entry, exc, mailbox_address=mailbox.address)
        _count(result, entry, state, countdown)


def _unknown(entry: Claimed, exc: SendOutcomeUnknown, result) -> None:
    sending.record_unknown(entry, exc, message_pk=entry.message_pk, message_id=entry.message_id)
    # This one certainly went out (its data did): its own mark, not its window's,
    # so the lookup's verdict does not say it may never have been reached.
    OutboxItem.objects.filter(pk=entry.pk).update(data_started_at=timezone.now())
    state = sending.outbox_resolve_unknown(entry.pk)
    _count(result, entry, state, None)


def _count(result: RunResult, entry: Claimed, state: str, countdown: int | None) -> None:
    result.states[str(entry.pk)] = state
    if state == OutboxState.SENT:
        result.sent += 1
    elif state == OutboxState.FAILED:
        result.failed += 1
    elif state == OutboxState.UNKNOWN:
        result.unknown += 1
    elif countdown is not None:
        result.retrying += 1
        result.retry_at(countdown)
