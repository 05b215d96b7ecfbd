"""Keeping the PostgreSQL search column filled (migration inboxes/0013_message_search).

A message is stored with an empty ``search_vector`` and indexed just after its batch
commits, off the sync's path: computing the vector is about 1 ms of PostgreSQL's CPU
per message, as much again as storing it. Until then the search scans the row's
fields (inboxes/search.py), so nothing is ever unsearchable, only slower to search
for a few seconds.

- ``search_index_soon()``: the ingest asks for a run when its batch commits; one run
  is queued at a time, a second later (a cache mark, taken back when the run starts,
  so a batch that commits during a run queues the next).
- ``index_messages`` (inboxes/tasks.py) runs ``messages_index_pending`` for up to
  SEARCH_INDEX_RUN_SECONDS and queues itself again if rows are left (a million rows
  after an upgrade are indexed in runs, not in one task that a time limit kills);
  beat runs it every SEARCH_INDEX_SECONDS for whatever no batch asked for (outbound
  mail, a lost task).
- Rows are taken ``FOR UPDATE SKIP LOCKED`` in batches: two runs never wait for each
  other or index a row twice.

Nothing happens on SQLite: it has no column and searches with a scan.
"""

from __future__ import annotations

import time

from django.conf import settings
from django.core.cache import cache
from django.db import connections, transaction

SEARCH_INDEX_QUEUED = "search-index:queued"
BATCH = 500
RUN_DELAY_SECONDS = 1

_INDEX_SQL = (
    "UPDATE conversations_message SET search_vector = message_search_vector("
    "subject, from_name, from_address, text, headers) WHERE id IN ("
    "SELECT id FROM conversations_message WHERE search_vector IS NULL "
    "LIMIT %s FOR UPDATE SKIP LOCKED)"
)


def search_indexed(using: str = "default") -> bool:
    """Whether this database keeps a search column (PostgreSQL)."""
    return connections[using].vendor == "postgresql"


def messages_index_pending(
    *, seconds: float | None = None, batch: int = BATCH, using: str = "default"
) -> tuple[int, bool]:
    """Index the messages stored since the last run, a batch per statement, for at
    most ``seconds`` (None: until none is left). Returns (rows indexed, whether any
    are left)."""
    if not search_indexed(using):
        return 0, False
    deadline = None if seconds is None else time.monotonic() + seconds
    indexed = 0
    while True:
        with transaction.atomic(using=using), connections[using].cursor() as cursor:
            cursor.execute(_INDEX_SQL, [batch])
            done = cursor.rowcount
        indexed += done
        if done < batch:
            return indexed, False
        if deadline is not None and time.monotonic() >= deadline:
            return indexed, True


def messages_unindexed(using: str = "default") -> int:
    """How many stored messages wait for their search column (0 on SQLite)."""
    if not search_indexed(using):
        return 0
    with connections[using].cursor() as cursor:
        cursor.execute("SELECT count(*) FROM conversations_message WHERE search_vector IS NULL")
        return int(cursor.fetchone()[0])


def search_index_soon(using: str = "default") -> None:
    """Queue an indexing run once the current transaction commits, unless one is
    queued already (at most one waits; the running one took its mark back)."""
    if not search_indexed(using):
        return

    def queue() -> None:
        if cache.add(SEARCH_INDEX_QUEUED, 1, timeout=settings.SEARCH_INDEX_SECONDS):
            from inboxes.tasks import index_messages

            # A moment later: the batches that commit meanwhile go in the same run
            # (a busy sync commits several a second).
            index_messages.apply_async(countdown=RUN_DELAY_SECONDS)

    transaction.on_commit(queue, using=using)


def search_index_run() -> tuple[int, bool]:
    """One task's run: the mark back first (a batch committing from now on queues
    the next run), then up to SEARCH_INDEX_RUN_SECONDS of indexing."""
    cache.delete(SEARCH_INDEX_QUEUED)
    return messages_index_pending(seconds=settings.SEARCH_INDEX_RUN_SECONDS)
