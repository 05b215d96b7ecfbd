"""The outbox: every email Postkamer sends leaves exactly once.

1. ``outbox_create`` writes the message (its Message-ID fixed now) and an
   OutboxItem in the caller's transaction, and on commit asks for a send run
   of the mailbox (``enqueue_send_run``), so a worker never sees a row that was
   rolled back and a crash before commit sends nothing.
2. The run (``run.py``, task ``send_outbox``) claims the due items of its
   mailbox in one conditional UPDATE (queued -> sending, ``FOR UPDATE SKIP
   LOCKED``, ``claims.py``; committed durably): two runs cannot both claim one
   item. It sends them over one connection. Right before an item's message data
   goes out its ``data_started_at`` is committed (``marks.py``), fenced by its
   claim (``ClaimLost``).
3. The server's 250 marks the item sent (recorded with the next item's mark,
   below), then a copy is stored in the mailbox's Sent folder
   (``sent_copies.py``).

The window, and how it is closed: if a worker dies after ``data_started_at``
and before the sent mark, nobody can know whether the server took the message.
The sweeper then marks the item ``unknown`` and looks for its Message-ID in the
Sent folder (providers that keep a copy of what they relay, like Gmail and
Microsoft 365, answer yes); if it is not there the item stays ``unknown`` and is
shown to the sender, never resent blindly. A worker that dies before
``data_started_at`` sent nothing, and the item is simply sent again.

One item at a time: right before an item's DATA one statement records the 250
of the item before it and marks this one started (``marks.py``), so at most one
item is ever marked started without its answer recorded. What a worker killed
mid-run leaves: the items before it recorded as sent (or settled as
failed/queued); at most one ``unknown`` (its data was going out, or its 250 had
come and was not recorded yet); the rest of its claim without
``data_started_at``, queued again and sent once by a later run. A statement per
item is cheap enough because the SMTP run commits it without waiting for the
disk (PostgreSQL: ``synchronous_commit`` off for that statement alone, prepared
once per connection; SQLite: WAL with ``synchronous=NORMAL``); a flush per
item costs 0.3-6 ms, a cap of a few hundred sends/s (bench/send.py). Such a
commit survives the worker, not a crash of the database server (or under
SQLite of the machine): each claim of the run records the database's epoch,
which that crash ends (``epoch.py``), and the sweeper counts every item claimed
in an ended epoch as possibly started (``unknown``, looked up in Sent, never
resent blindly): a database crash costs up to one claim (``run.CLAIM_CHUNK``,
100 items) per run in progress, a worker death at most one item. A drop during
an item's DATA in a live run makes only that item ``unknown`` (the run knows
it went out, ``outcomes.py`` looks it up in Sent), and refused transactions
(4xx/5xx before or at DATA) are settled at once and do not stop the run: RSET,
next item. Gmail and Microsoft 365 flush a mark per item (their send is an
HTTP request that costs more than the flush).

Retries: a transient failure puts the item back to ``queued`` with a capped
exponential backoff (``next_attempt_at``) and the run task asks Celery to run
again when the first one is due; a mailbox waiting for its owner to sign in
again holds its items until ``outbox_resume``; the sweeper (beat, ``sweep.py``)
re-publishes runs for due items whose message was lost, recovers claims whose
worker died, and stores missing Sent copies.

Composing a message is ``compose.py``; queueing it and asking for runs
(deduplicated per mailbox by a lease in the cache) ``enqueue.py``.
"""

from inboxes.outbox.claims import Claimed, claim_due, release
from inboxes.outbox.compose import Attachment, CalendarPart, Composed, Recipient, build_mime
from inboxes.outbox.enqueue import (
    Draft,
    enqueue_send_run,
    outbox_create,
    outbox_create_many,
    outbox_resume,
    run_lease_hold,
    run_lease_release,
    run_requests_answered,
)
from inboxes.outbox.outcomes import (
    ClaimLost,
    SendLater,
    outbox_resolve_unknown,
    record_unknown,
    sent_detail,
    settle_failure,
)
from inboxes.outbox.run import RunResult, outbox_send_run, send_claimed
from inboxes.outbox.sent_copies import append_sent_copies, outbox_store_sent_copy
from inboxes.outbox.sweep import outbox_sweep

__all__ = [
    "Attachment",
    "CalendarPart",
    "ClaimLost",
    "Composed",
    "Claimed",
    "Draft",
    "Recipient",
    "RunResult",
    "SendLater",
    "append_sent_copies",
    "build_mime",
    "claim_due",
    "enqueue_send_run",
    "outbox_create",
    "outbox_create_many",
    "outbox_resolve_unknown",
    "outbox_resume",
    "outbox_send_run",
    "outbox_store_sent_copy",
    "outbox_sweep",
    "record_unknown",
    "release",
    "run_lease_hold",
    "run_lease_release",
    "run_requests_answered",
    "send_claimed",
    "sent_detail",
    "settle_failure",
]
