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
- ``data_started_at`` is committed in blocks of ``SEND_WINDOW // 2`` items, one
  block ahead, each statement with the sent marks so far (``_Marks``): the
  statement for the next block is sent before this block's first DATA and its
  commit runs while the block goes out over SMTP; its result is read (the fence)
  before the next block's first DATA. At most ``SEND_WINDOW`` items are ever
  marked started without a committed sent mark (the trade-off is in sending.py);
- a refused transaction (4xx/5xx before or at DATA) is settled for that item
  and the run goes on after an RSET; a connection dropped before DATA is
  reopened and the item sent on the new one; a drop after DATA leaves the item
  ``unknown`` (and looked up in Sent); the connection is renewed every ``RECONNECT_EVERY`` (1000) messages;
- the Sent copies of a chunk are APPENDed in one MULTIAPPEND where the server
  offers it (Dovecot does), one APPEND after another over the same session
  otherwise, in a thread of its own that the run waits for only when it is
  ``COPY_BATCHES_IN_FLIGHT`` chunks behind, and marked stored in one UPDATE; a
  failure leaves them to the sweeper.

API providers keep a committed ``data_started_at`` per item (their send is an
HTTP request that costs far more than the commit), sent one at a time by
``sending.send_claimed``; the run saves them the claim and connection set-up
per item.
"""

from __future__ import annotations

import contextlib
import imaplib
import json
import logging
import select
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

from inboxes import sending
from inboxes.models import Mailbox, Message, OutboxItem, OutboxState, Provider
from inboxes.providers import open_session, open_transport
from inboxes.providers.base import ProviderError, SendOutcomeUnknown

log = logging.getLogger(__name__)

CLAIM_CHUNK = 100
# At most this many items marked "DATA started" without a committed sent mark:
# blocks of half of it, committed one block ahead (see sending.py on the window).
SEND_WINDOW = 20
# A new SMTP connection after this many messages (bounded: servers and networks
# do not keep a session forever). A server whose own cap is lower hangs up at the
# next MAIL FROM, which the run takes as a drop before DATA: that item goes out
# on a new connection. Every new connection costs TCP + STARTTLS + AUTH (5-10 ms
# on the benchmark machine: 100 cost 4-7% of the run's time, bench/README.md).
RECONNECT_EVERY = 1000
# A run stops claiming after this long and hands over to a new run (task time limits).
RUN_MAX_SECONDS = 120
COPY_BATCH_BYTES = 8 * 1024 * 1024
# Sent copy batches (a chunk each) handed to the IMAP thread and not yet stored,
# before the run waits for the oldest: the IMAP server may fall behind for a while.
COPY_BATCHES_IN_FLIGHT = 3


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

# A data-modifying WITH runs whether or not the main query reads it. The sent mark
# is not fenced: the server's 250 is the truth, also for an item the sweeper has
# meanwhile called unknown (it had data_started_at, so it was never handed to
# another claim). $1 sent, $2 sending, $3 unknown, $4 now, $5 and $6 the sent
# items and their details, $7 and $8 the items whose data may now go out and
# their claims. Arrays, not a JSON document: the planner expects 10 rows from
# unnest() and looks each one up by its key (from jsonb_to_recordset() it
# expects 100 and scans the whole table).
_MARKS_SQL = """
    WITH sent AS (
        UPDATE {table} AS o SET state = $1, detail = v.detail, sent_at = $4::timestamptz
          FROM unnest($5::uuid[], $6::text[]) AS v(id, detail)
         WHERE o.id = v.id AND o.state IN ($2, $3)
    )
    UPDATE {table} AS o SET data_started_at = $4::timestamptz
      FROM unnest($7::uuid[], $8::integer[]) AS v(id, attempts)
     WHERE o.id = v.id AND o.state = $2 AND o.attempts = v.attempts
       AND o.data_started_at IS NULL
    RETURNING o.id
"""


def _array(values) -> str:
    """A PostgreSQL array literal (text format) of ``values``, each quoted."""
    quoted = ('"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"' for value in values)
    return "{" + ",".join(quoted) + "}"


class _MarksInFlight:
    """One marks statement sent over the run's database connection (autocommitted,
    or inside the caller's transaction) whose result has not been read yet: the
    run goes on over SMTP while PostgreSQL commits it. Nothing else may use the
    connection until ``_await_marks`` has read the result (``_Marks.before_query``
    sees to it for the run's other queries)."""

    def __init__(
        self, sent: list[tuple[Claimed, str]], start: list[Claimed], now: datetime
    ) -> None:
        sql = _MARKS_SQL.format(table=OutboxItem._meta.db_table)
        params = [
            OutboxState.SENT,
            OutboxState.SENDING,
            OutboxState.UNKNOWN,
            now.isoformat(),
            _array(entry.pk for entry, _ in sent),
            _array(detail[:4000] for _, detail in sent),
            _array(entry.pk for entry in start),
            _array(entry.attempts for entry in start),
        ]
        connection.ensure_connection()
        with connection.wrap_database_errors:
            self.pgconn = connection.connection.pgconn
            self.pgconn.send_query_params(sql.encode(), [p.encode() for p in params])


def _await_marks(statement: _MarksInFlight) -> set:
    """Read the result of a marks statement: the ids of its ``start`` items still ours
    (the fence: same claim, not yet started), once committed."""
    from psycopg import errors, pq

    pgconn = statement.pgconn
    won: set = set()
    error = None
    with connection.wrap_database_errors:
        while True:
            while pgconn.is_busy():
                select.select([pgconn.socket], [], [])
                pgconn.consume_input()
            result = pgconn.get_result()
            if result is None:
                break
            if result.status == pq.ExecStatus.TUPLES_OK:
                won.update(
                    uuid.UUID(result.get_value(row, 0).decode()) for row in range(result.ntuples)
                )
            elif error is None:
                error = errors.error_from_result(result, encoding="utf-8")
        if error is not None:
            raise error
    return won


def _commit_marks(
    sent: list[tuple[Claimed, str]], start: list[Claimed], now: datetime | None = None
) -> set:
    """Mark ``sent`` items sent and ``start`` items as having their data going out,
    in one autocommitted statement; returns the ids of ``start`` still ours (the
    fence: same claim, not yet started)."""
    now = now or timezone.now()
    if connection.vendor == "postgresql":
        return _await_marks(_MarksInFlight(sent, start, now))
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


def _mark_sent_portable(entry: Claimed, detail: str, now: datetime) -> None:
    OutboxItem.objects.filter(
        pk=entry.pk, state__in=[OutboxState.SENDING, OutboxState.UNKNOWN]
    ).update(state=OutboxState.SENT, detail=detail[:4000], sent_at=now)


class _Marks:
    """A run's "DATA started" marks and its pending sent marks.

    With a window of 4 or more (PostgreSQL), the marks are committed ahead in
    blocks of ``window // 2`` items: right before a chunk's first DATA one commit
    marks its first two blocks (with the sent marks still pending from the chunk
    before); right before the DATA of each later block's first item, the block
    after it is marked together with the sent marks so far, in a statement whose
    commit runs while this block goes out (its result is read before that next
    block's first DATA, or before any other query of the run). So the SMTP loop
    rarely waits for a commit, and no more than two blocks (at most ``window``
    items) are ever marked started without their sent mark committed. The marks
    committed ahead carry the time of the chunk's first ones. With a
    smaller window, or elsewhere than PostgreSQL: one commit per window, made
    right before its first DATA."""

    def __init__(self, window: int) -> None:
        window = max(1, window)
        self.ahead = window >= 4 and connection.vendor == "postgresql"
        self.block = window // 2 if self.ahead else window
        self.pending_sent: list[tuple[Claimed, str]] = []
        self.in_flight: _MarksInFlight | None = None
        self.begin([])

    def begin(self, chunk: list[Claimed]) -> None:
        """The next chunk (the sent marks still pending go with its first commit)."""
        self.chunk = chunk
        self.index = {entry.pk: n for n, entry in enumerate(chunk)}
        self.marked = 0  # chunk[:marked] have had their marks asked for
        self.started: set = set()  # ... committed and still ours
        # The time of the chunk's first marks, also given to the marks committed
        # ahead: an item marked ahead shares its "DATA started" time with items that
        # went out before it, so the sweeper's detail does not claim it went out
        # (sending._started_in_a_window).
        self.stamp = timezone.now()

    def before_data(self, entry: Claimed) -> None:
        n = self.index[entry.pk]
        if entry.pk not in self.started:
            self.wait()
            if entry.pk not in self.started and n >= self.marked:
                size = 2 * self.block if self.ahead else self.block
                self.stamp = timezone.now()
                start = self.chunk[n : n + size]
                self.started |= _commit_marks(self._take_sent(), start, self.stamp)
                self.marked = n + size
            if entry.pk not in self.started:
                raise sending.ClaimLost(str(entry.pk))
        if self.ahead and self.in_flight is None and self.marked - n <= self.block:
            ahead = self.chunk[self.marked : self.marked + self.block]
            self.in_flight = _MarksInFlight(self._take_sent(), ahead, self.stamp)
            self.marked += self.block

    def sent(self, entry: Claimed, detail: str) -> None:
        self.pending_sent.append((entry, detail))

    def _take_sent(self) -> list[tuple[Claimed, str]]:
        sent, self.pending_sent = self.pending_sent, []
        return sent

    def wait(self) -> None:
        """Read the result of the statement sent ahead, if any."""
        if self.in_flight is not None:
            statement, self.in_flight = self.in_flight, None
            self.started |= _await_marks(statement)

    def before_query(self, execute, sql, params, many, context):
        """``connection.execute_wrapper``: any other query of the run's thread waits for
        the statement in flight first (one statement at a time on a connection)."""
        self.wait()
        return execute(sql, params, many, context)

    def flush(self) -> None:
        """Commit the sent marks still pending (before the run settles an item
        otherwise, and at its end)."""
        self.wait()
        if self.pending_sent:
            _commit_marks(self._take_sent(), [])

    def close(self) -> None:
        """On the way out, also of an exception: no statement is left unread."""
        try:
            self.wait()
        except Exception:
            log.exception("send run: could not read the marks sent ahead")
            connection.close()


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
            # imapclient hands a tagged NO back instead of raising it.
            typ, data = client.multiappend(name, [{"msg": raw, "flags": (SEEN,)} for raw in raws])
            if typ != "OK":
                raise imaplib.IMAP4.error(f"APPEND refused: {typ} {data}")
        else:
            for raw in raws:
                client.append(name, raw, flags=(SEEN,))
    except BaseException as exc:
        raise imap_error(exc) from exc


class _SentCopies:
    """Sent copies of a run: one IMAP session, opened on first use, in a thread of
    its own, so a chunk's MULTIAPPEND runs while the next chunks go out over SMTP
    (both mostly wait on their server). The run does not wait for a batch until
    ``COPY_BATCHES_IN_FLIGHT`` are handed over and not done (then for the oldest);
    the ``sent_copy_stored`` UPDATE of a batch that is done is made here, in the
    run's thread."""

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
        self._in_flight: list[tuple[Future, list[uuid.UUID]]] = []

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
            self.session = open_session(self.mailbox)  # connects in the thread
        raws = [raw for _, raw in batch]
        self._in_flight.append((self._thread.submit(self._append, raws), [pk for pk, _ in batch]))

    def _append(self, raws: list[bytes]) -> None:
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
        stored: list[uuid.UUID] = []
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
    marks = _Marks(SEND_WINDOW)
    stopped = "error"  # until a pass ends: an exception lets go of the lease too
    try:
        with connection.execute_wrapper(marks.before_query):
            try:
                while True:
                    sending.run_requests_answered(mailbox_id)
                    stopped = _claim_and_send(mailbox, result, link, copies, marks, deadline)
                    if stopped == "deadline":
                        sending.enqueue_send_run(mailbox_id, force=True)
                        break
                    if stopped or not sending.run_lease_release(mailbox_id):
                        break
            finally:
                # Also on the way out of an exception: what the server accepted is recorded.
                try:
                    marks.flush()
                finally:
                    marks.close()
    finally:
        link.close()
        copies.close()
        result.connections = link.opened
        result.copies = copies.stored
        if stopped:
            sending.run_lease_release(mailbox_id)
    return result


def _claim_and_send(mailbox, result, link, copies, marks, deadline) -> str:
    """Claim and send chunks until none is due; "" or why the run stops early."""
    while True:
        if time.monotonic() > deadline:
            return "deadline"
        chunk = claim_due(mailbox.pk, CLAIM_CHUNK)
        if not chunk:
            return ""
        result.claimed += len(chunk)
        if mailbox.provider == Provider.IMAP:
            stopped = _send_chunk_smtp(mailbox, chunk, result, link, copies, marks)
        else:
            stopped = _send_chunk_api(mailbox, chunk, result, link)
        copies.store()
        sending.run_lease_hold(mailbox.pk)
        if stopped:
            return stopped


def _send_chunk_smtp(mailbox, chunk: list[Claimed], result, link: _Link, copies, marks) -> str:
    marks.begin(chunk)
    for index, entry in enumerate(chunk):
        raw = _read_raw(entry)
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
                    before_data=lambda entry=entry: marks.before_data(entry),
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
