"""The outbox: every email Postkamer sends leaves exactly once.

1. ``outbox_create`` writes the message (its Message-ID fixed now) and an
   OutboxItem in the caller's transaction, and on commit asks for a send run
   of the mailbox (``enqueue_send_run``), so a worker never sees a row that was
   rolled back and a crash before commit sends nothing.
2. The run (``run.py``, task ``send_outbox``) claims the due items of its
   mailbox in one conditional UPDATE (queued -> sending, ``FOR UPDATE SKIP
   LOCKED``, ``claims.py``): two runs cannot both claim one item. It sends them
   over one connection. Before an item's message data goes out its
   ``data_started_at`` is committed (for a window of items at once, below,
   ``marks.py``), fenced by its claim (``ClaimLost``).
3. On the server's 250 the item is marked sent, then a copy is stored in the
   mailbox's Sent folder (``sent_copies.py``).

The window, and how it is closed: if a worker dies after ``data_started_at``
and before the sent mark, nobody can know whether the server took the message.
The sweeper then marks the item ``unknown`` and looks for its Message-ID in the
Sent folder (providers that keep a copy of what they relay, like Gmail and
Microsoft 365, answer yes); if it is not there the item stays ``unknown`` and is
shown to the sender, never resent blindly. A worker that dies before
``data_started_at`` sent nothing, and the item is simply sent again.

The send run's window (SMTP, ``run.SEND_WINDOW`` = 20): the "DATA started" marks
(fenced by their claims) are committed in blocks of 10, one block ahead. Right
before the DATA of a chunk's first item one commit marks its first 20 items
(with the sent marks still pending); right before the DATA of each later block's
first item one statement marks the block after it, together with the sent marks
so far, and its commit runs while this block goes out; its result (which of them
are still the run's own) is read before the DATA of that next block's first
item. So no item's data goes out before its mark is committed, the SMTP loop
seldom waits for a commit, and never more than 20 items (two blocks) are marked
started without a committed sent mark. (A durable commit on the benchmark
machine's disk costs 1-6 ms: a commit per message would cap a run at a few
hundred sends/s: bench/send.py.) What a worker killed mid-run leaves:

- items before the window: recorded as sent (or settled as failed/queued);
- the window, at most 20 items marked started whose sent mark was not
  committed yet: ``unknown``, never resent. Some went out (their 250 was not
  recorded yet), one may have been going out, the rest were never reached: the
  sweeper cannot tell them apart, so each is looked up in the Sent folder
  (found: sent) and otherwise says that it may or may not have been reached and
  was not sent again (``outcomes._started_in_a_window``: the marks committed
  ahead carry the time of the chunk's first ones, which went out);
- claimed items after the window: no ``data_started_at``, queued again and sent
  once by a later run.

So a worker death costs at most 20 items "unknown" (Gmail and Microsoft 365,
marked per item: at most 1), never a double send. A drop during an item's DATA
in a live run still makes only that item ``unknown`` (the run knows it went
out, ``outcomes.py`` looks it up in Sent), and refused
transactions (4xx/5xx before or at DATA) are settled at once and do not stop
the run: RSET, next item. Gmail and Microsoft 365 keep a mark per item (their
send is an HTTP request that costs more than the commit).

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
from inboxes.outbox.compose import Recipient, build_mime
from inboxes.outbox.enqueue import (
    enqueue_send_run,
    outbox_create,
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
    "ClaimLost",
    "Claimed",
    "Recipient",
    "RunResult",
    "SendLater",
    "append_sent_copies",
    "build_mime",
    "claim_due",
    "enqueue_send_run",
    "outbox_create",
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
