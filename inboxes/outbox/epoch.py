"""The database's durability epoch: it changes whenever commits that were not yet
flushed to disk may have been lost.

The SMTP send run commits its per-item marks without waiting for the disk
(``marks.py``). A worker that dies loses none of them (the database has them); a
crash of the database server (or, under SQLite, of the machine) may lose the last
ones. So each claim of that run records the epoch (``OutboxItem.marks_epoch``, in
the claim's own commit, which is flushed), and the sweeper counts an item claimed
in an earlier epoch as possibly started: never resent blindly.

- PostgreSQL: a random token in an UNLOGGED one-row table (migration
  ``inboxes/0007``). Crash recovery empties every unlogged table, a clean shutdown
  (which flushes all commits first) keeps it; the first reader afterwards writes a
  new token. (``pg_postmaster_start_time()`` would not do: a backend killed by the
  OOM killer makes the postmaster reinitialise and recover, losing the commits not
  yet flushed, without a new start time.)
- SQLite (WAL, ``synchronous=NORMAL``): commits are written to the WAL file and
  lost only when the machine goes down before the next checkpoint, so the epoch is
  the kernel's boot id.
"""

from __future__ import annotations

import functools
import uuid
from pathlib import Path

from django.db import connection

EPOCH_TABLE = "inboxes_outbox_epoch"
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def current_epoch() -> str:
    """The epoch of the database the default connection points at."""
    if connection.vendor == "postgresql":
        return _postgresql_epoch()
    return _boot_epoch()


def _postgresql_epoch() -> str:
    select = f"SELECT token FROM {EPOCH_TABLE} WHERE id = 1"  # noqa: S608 - a constant
    with connection.cursor() as cursor:
        cursor.execute(select)
        row = cursor.fetchone()
        if row is None:
            # The first reader since the table was created or emptied by a crash
            # recovery. Two at once: the second waits for the first's commit and
            # keeps its token (read again below, in a new snapshot).
            cursor.execute(
                f"INSERT INTO {EPOCH_TABLE} (id, token) VALUES (1, %s) "  # noqa: S608
                "ON CONFLICT (id) DO NOTHING",
                [uuid.uuid4().hex],
            )
            cursor.execute(select)
            row = cursor.fetchone()
    return f"pg:{row[0]}"


@functools.cache
def _boot_epoch() -> str:
    # Not Linux (development machines): a crash of the machine goes unnoticed.
    try:
        return f"boot:{BOOT_ID.read_text().strip()}"
    except OSError:
        return "boot:unknown"
