"""A send run's marks, one item at a time: "DATA started" committed right before the
item's data goes out, and the server's 250 recorded with the next item's mark.

Right before an item's DATA one statement records the 250 of the item before it
(if any) and marks this one started, fenced by its claim. So at most one item of a
run is ever marked started without a recorded answer: the one whose data is going
out or, between its 250 and the next item's mark, the last one sent. A worker that
dies mid-run leaves at most that one ``unknown``; an item whose DATA was never
reached has no mark and is sent again. The last 250 of a chunk is recorded when the
chunk ends (``flush``).

What makes a statement per item cheap enough (a commit flushed to disk costs
0.3-6 ms, a cap of a few hundred sends/s; bench/send.py):

- PostgreSQL: the statement commits asynchronously (``synchronous_commit`` off for
  its own transaction alone, by ``set_config(..., true)`` in it) and is prepared
  once per connection: about 0.1 ms. The commit is visible to every session at
  once and survives the worker; only a crash of the database server can lose it
  before the WAL writer flushes it (within ~0.6 s). The claims of such a run
  record the database's epoch, which that crash ends (``epoch.py``): the sweeper
  then counts every item the run had claimed as possibly started. Any later
  flushed commit flushes the marks before it too (the next claim, for one).
- SQLite (WAL, ``synchronous=NORMAL``): a commit writes the WAL without a sync and
  is lost only with the machine; the epoch is then the boot id.
"""

from __future__ import annotations

import logging
import weakref
from typing import Any
from uuid import UUID

from django.db import connection, transaction
from django.utils import timezone

from inboxes.models import OutboxItem, OutboxState
from inboxes.outbox.claims import Claimed
from inboxes.outbox.outcomes import ClaimLost

log = logging.getLogger(__name__)

# $1 now, $2 and $3 the item whose 250 came and the server's words, $4 and $5 the
# item whose data goes out next and its claim (NULL when there is none). The sent
# mark is not fenced: the server's 250 is the truth, also for an item the sweeper
# has meanwhile called unknown (it had data_started_at, so it was never handed to
# another claim). The fence of "DATA started": still this claim (attempts), still
# sending, not started yet. A data-modifying WITH runs whether or not the main
# query reads it, and the main query has one row whatever they matched, so
# set_config() runs: synchronous_commit is off until the statement's implicit
# transaction ends, after its commit.
_MARKS_SQL = """
    WITH sent AS (
        UPDATE {table} SET state = '{sent}', detail = $3::text, sent_at = $1::timestamptz
         WHERE id = $2::uuid AND state IN ('{sending}', '{unknown}')
    ), started AS (
        UPDATE {table} SET data_started_at = $1::timestamptz
         WHERE id = $4::uuid AND state = '{sending}' AND attempts = $5::integer
           AND data_started_at IS NULL
        RETURNING id
    )
    SELECT set_config('synchronous_commit', 'off', true), (SELECT count(*) FROM started)
"""
# Prepared once per database connection: parsing and planning it each time would
# cost about as much again as running it.
_STATEMENT = "postkamer_outbox_marks"
_prepared: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


def _pgconn() -> Any:
    """The run's libpq connection, with the marks statement prepared on it."""
    from psycopg import errors, pq

    connection.ensure_connection()
    pgconn = connection.connection.pgconn
    if pgconn not in _prepared:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_prepared_statements WHERE name = %s", [_STATEMENT])
            known = cursor.fetchone() is not None
        if not known:
            sql = _MARKS_SQL.format(
                table=OutboxItem._meta.db_table,
                sent=OutboxState.SENT,
                sending=OutboxState.SENDING,
                unknown=OutboxState.UNKNOWN,
            )
            result = pgconn.prepare(_STATEMENT.encode(), sql.encode())
            if result.status != pq.ExecStatus.COMMAND_OK:
                raise errors.error_from_result(result, encoding="utf-8")
        _prepared[pgconn] = True
    return pgconn


def _commit(sent: tuple[Claimed, str] | None, start: Claimed | None) -> bool:
    """Record ``sent``'s 250 and mark ``start``'s data as going out, in one commit;
    whether ``start`` is still this run's claim (False without one)."""
    now = timezone.now()
    if connection.vendor == "postgresql":
        from psycopg import errors, pq

        params = [
            now.isoformat(),
            str(sent[0].pk) if sent else None,
            sent[1][:4000] if sent else None,
            str(start.pk) if start else None,
            str(start.attempts) if start else None,
        ]
        values = [None if p is None else p.encode() for p in params]
        with connection.wrap_database_errors:
            pgconn = _pgconn()
            result = pgconn.exec_prepared(_STATEMENT.encode(), values)
            if (
                result.error_field(pq.DiagnosticField.SQLSTATE) == b"26000"
                and pgconn.transaction_status == pq.TransactionStatus.IDLE
            ):
                # Deallocated meanwhile (psycopg's own prepared statements are
                # cleared with DEALLOCATE ALL after a rollback): nothing ran; again.
                _prepared.pop(pgconn, None)
                result = _pgconn().exec_prepared(_STATEMENT.encode(), values)
            if result.status != pq.ExecStatus.TUPLES_OK:
                raise errors.error_from_result(result, encoding="utf-8")
            return result.get_value(0, 1) == b"1"
    with transaction.atomic():
        if sent:
            OutboxItem.objects.filter(
                pk=sent[0].pk, state__in=[OutboxState.SENDING, OutboxState.UNKNOWN]
            ).update(state=OutboxState.SENT, detail=sent[1][:4000], sent_at=now)
        return start is not None and bool(
            OutboxItem.objects.filter(
                pk=start.pk,
                state=OutboxState.SENDING,
                attempts=start.attempts,
                data_started_at__isnull=True,
            ).update(data_started_at=now)
        )


class Marks:
    """A run's marks: ``before_data`` records the last 250 and marks the item's
    data as going out (ClaimLost if the claim is no longer the run's); ``sent``
    keeps the 250 for the next mark; ``flush`` records it now."""

    def __init__(self) -> None:
        self.pending: tuple[Claimed, str] | None = None  # a 250 not recorded yet
        self.marked: UUID | None = None

    def before_data(self, entry: Claimed) -> None:
        if entry.pk == self.marked:
            return  # already marked (the transport asked twice)
        sent, self.pending = self.pending, None
        if not _commit(sent, entry):
            raise ClaimLost(str(entry.pk))
        self.marked = entry.pk

    def sent(self, entry: Claimed, detail: str) -> None:
        self.pending = (entry, detail)

    def flush(self) -> None:
        """Record the last 250 now (at the end of a chunk, and of the run)."""
        sent, self.pending = self.pending, None
        if sent:
            _commit(sent, None)

    def close(self) -> None:
        """On the way out, also of an exception."""
        try:
            self.flush()
        except Exception:
            log.exception("send run: could not record the last sent mark")
