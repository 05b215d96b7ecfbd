"""A send run's marks: "DATA started" before an item's data goes out, "sent" after
the server's 250, committed together in as few statements as the window allows.

The marks of the SMTP run are committed in blocks of ``window // 2`` items, one
block ahead, each statement with the sent marks so far (``Marks``): the
statement for the next block is sent before this block's first DATA and its
commit runs while the block goes out over SMTP; its result is read (the fence:
still the run's own claim) before the next block's first DATA. At most
``window`` items are ever marked started without a committed sent mark.
"""

from __future__ import annotations

import logging
import select
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any
from uuid import UUID

from django.db import connection, transaction
from django.utils import timezone

from inboxes.models import OutboxItem, OutboxState
from inboxes.outbox.claims import Claimed
from inboxes.outbox.outcomes import ClaimLost

log = logging.getLogger(__name__)


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


def _array(values: Iterable[object]) -> str:
    """A PostgreSQL array literal (text format) of ``values``, each quoted."""
    quoted = ('"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"' for value in values)
    return "{" + ",".join(quoted) + "}"


class _MarksInFlight:
    """One marks statement sent over the run's database connection (autocommitted,
    or inside the caller's transaction) whose result has not been read yet: the
    run goes on over SMTP while PostgreSQL commits it. Nothing else may use the
    connection until ``_await_marks`` has read the result (``Marks.before_query``
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


def _await_marks(statement: _MarksInFlight) -> set[UUID]:
    """Read the result of a marks statement: the ids of its ``start`` items still ours
    (the fence: same claim, not yet started), once committed."""
    from psycopg import errors, pq

    pgconn = statement.pgconn
    won: set[UUID] = set()
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
                won.update(UUID(result.get_value(row, 0).decode()) for row in range(result.ntuples))
            elif error is None:
                error = errors.error_from_result(result, encoding="utf-8")
        if error is not None:
            raise error
    return won


def _commit_marks(
    sent: list[tuple[Claimed, str]], start: list[Claimed], now: datetime | None = None
) -> set[UUID]:
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


class Marks:
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
        self.started: set[UUID] = set()  # ... committed and still ours
        # The time of the chunk's first marks, also given to the marks committed
        # ahead: an item marked ahead shares its "DATA started" time with items that
        # went out before it, so the sweeper's detail does not claim it went out
        # (outcomes._started_in_a_window).
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
                raise ClaimLost(str(entry.pk))
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

    def before_query(
        self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any
    ) -> Any:
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
