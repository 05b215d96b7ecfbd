"""The per-mailbox send run: the outbox's due items over one connection.

``outbox_send_run(mailbox_id)`` (task ``send_outbox``) claims the mailbox's due
items ``CLAIM_CHUNK`` at a time in one statement, oldest first, and sends them
over one SMTP connection (or one API client for Gmail and Microsoft 365), then
stores the Sent copies of the chunk over one IMAP session for the whole run.
The exactly-once rules and the window are in the package's docstring
(``inboxes/outbox/__init__.py``); this module keeps them with less work per item:

- the claim returns what the send needs (envelope, recipients, the raw file's
  name and the Message-ID) in the same statement, so there is no read per item
  before the send;
- right before each item's DATA one cheap statement records the 250 of the item
  before it and commits this one's ``data_started_at`` (``marks.Marks``: on
  PostgreSQL prepared and committed without waiting for the disk, the claim
  recording the database's epoch, ``epoch.py``). At most one item is ever marked
  started without its 250 recorded: a worker killed mid-run leaves at most one
  ``unknown``;
- a refused transaction (4xx/5xx before or at DATA) is settled for that item
  and the run goes on after an RSET; a connection dropped before DATA is
  reopened and the item sent on the new one; a drop after DATA leaves the item
  ``unknown`` (and looked up in Sent); the connection is renewed every
  ``RECONNECT_EVERY`` (1000) messages;
- the Sent copies of a chunk are APPENDed in one MULTIAPPEND where the server
  offers it (Dovecot does), one APPEND after another over the same session
  otherwise, in a thread of its own that the run waits for only when it is
  ``COPY_BATCHES_IN_FLIGHT`` chunks behind, and marked stored in one UPDATE; a
  failure leaves them to the sweeper (``sent_copies.SentCopies``).

A personal mailbox's send limits (``limits.py``): each claim takes no more than the
rolling windows allow; when a claim finds no room, the due items left are held
(queued, ``held_until`` set, attempts untouched) and, at the end of the run, a run
is asked for when the first held item is due.

API providers flush each ``data_started_at`` to disk (their send is an HTTP
request that costs far more than the flush), sent one at a time by
``send_claimed``; the run saves them the claim and connection set-up per item.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import smtplib
import time
from dataclasses import dataclass, field
from datetime import timedelta
from uuid import UUID

from django.utils import timezone

from inboxes.models import Mailbox, Message, OutboxItem, OutboxState, Provider
from inboxes.outbox.claims import Claimed, claim_due, raw_of, read_raw, release
from inboxes.outbox.enqueue import (
    enqueue_send_run,
    run_lease_hold,
    run_lease_release,
    run_requests_answered,
)
from inboxes.outbox.epoch import current_epoch
from inboxes.outbox.limits import SendLimits, hold_over_limit, limits_of, wake_for_held
from inboxes.outbox.marks import Marks
from inboxes.outbox.outcomes import (
    ClaimLost,
    SendLater,
    outbox_resolve_unknown,
    record_state,
    record_unknown,
    sent_detail,
    settle_failure,
)
from inboxes.outbox.sent_copies import SentCopies
from inboxes.providers import open_transport
from inboxes.providers.base import MailTransport, ProviderError, SendOutcomeUnknown

log = logging.getLogger(__name__)

CLAIM_CHUNK = 100
# A new SMTP connection after this many messages (bounded: servers and networks
# do not keep a session forever). A server whose own cap is lower hangs up at the
# next MAIL FROM, which the run takes as a drop before DATA: that item goes out
# on a new connection. Every new connection costs TCP + STARTTLS + AUTH (5-10 ms
# on the benchmark machine: 100 cost 4-7% of the run's time, bench/send.py).
RECONNECT_EVERY = 1000
# A run stops claiming after this long and hands over to a new run (task time limits).
RUN_MAX_SECONDS = 120


@dataclass
class RunResult:
    mailbox_id: str
    claimed: int = 0
    sent: int = 0
    failed: int = 0
    unknown: int = 0
    retrying: int = 0
    released: int = 0
    held: int = 0  # held back by the mailbox's send limits
    copies: int = 0
    connections: int = 0
    retry_in: int | None = None  # seconds until the first item put back for a retry is due
    states: dict[str, str] = field(default_factory=dict)

    def retry_at(self, countdown: int | None) -> None:
        if countdown is not None:
            self.retry_in = countdown if self.retry_in is None else min(self.retry_in, countdown)


# --- The connection of a run ----------------------------------------------------------------------


class _Link:
    """One open transport at a time: opened on first use, renewed after
    ``RECONNECT_EVERY`` messages or once it dropped."""

    def __init__(self, mailbox: Mailbox) -> None:
        self.mailbox = mailbox
        self.transport: MailTransport | None = None
        self.messages = 0
        self.opened = 0

    def get(self) -> MailTransport:
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


# --- The run --------------------------------------------------------------------------------------


def outbox_send_run(mailbox_id: UUID | str) -> RunResult:
    """Send the mailbox's due items until none is left (or ``RUN_MAX_SECONDS``,
    then a new run is asked for)."""
    mailbox = Mailbox.objects.get(pk=mailbox_id)
    limits = limits_of(mailbox)
    result = RunResult(str(mailbox_id))
    run_lease_hold(mailbox_id)
    deadline = time.monotonic() + RUN_MAX_SECONDS
    link = _Link(mailbox)
    copies = SentCopies(mailbox)
    marks = Marks()
    stopped = "error"  # until a pass ends: an exception lets go of the lease too
    try:
        try:
            while True:
                run_requests_answered(mailbox_id)
                stopped = _claim_and_send(mailbox, limits, result, link, copies, marks, deadline)
                if stopped == "deadline":
                    enqueue_send_run(mailbox_id, force=True)
                    break
                if stopped or not run_lease_release(mailbox_id):
                    break
        finally:
            # Also on the way out of an exception: what the server accepted is recorded.
            marks.close()
    finally:
        link.close()
        copies.close()
        result.connections = link.opened
        result.copies = copies.stored
        if stopped:
            run_lease_release(mailbox_id)
    if limits is not None:
        wake_for_held(mailbox_id)
    return result


def _claim_and_send(
    mailbox: Mailbox,
    limits: SendLimits | None,
    result: RunResult,
    link: _Link,
    copies: SentCopies,
    marks: Marks,
    deadline: float,
) -> str:
    """Claim and send chunks until none is due; "" or why the run stops early."""
    while True:
        if time.monotonic() > deadline:
            return "deadline"
        if mailbox.provider == Provider.IMAP:
            # Its marks are committed without a flush (marks.py): the epoch they rely on.
            chunk = claim_due(mailbox.pk, CLAIM_CHUNK, marks_epoch=current_epoch(), limits=limits)
        else:
            chunk = claim_due(mailbox.pk, CLAIM_CHUNK, limits=limits)
        if not chunk:
            if limits is not None:
                # No room left, or nothing due: whatever is still due waits its turn.
                result.held += hold_over_limit(mailbox, limits)
            return ""
        result.claimed += len(chunk)
        if mailbox.provider == Provider.IMAP:
            stopped = _send_chunk_smtp(mailbox, chunk, result, link, copies, marks)
            marks.flush()  # the chunk's last 250, before waiting for anything else
        else:
            stopped = _send_chunk_api(mailbox, chunk, result, link)
        copies.store()
        run_lease_hold(mailbox.pk)
        if stopped:
            return stopped


def _send_chunk_smtp(
    mailbox: Mailbox,
    chunk: list[Claimed],
    result: RunResult,
    link: _Link,
    copies: SentCopies,
    marks: Marks,
) -> str:
    for index, entry in enumerate(chunk):
        raw = read_raw(entry)
        for attempt in (1, 2):
            try:
                transport = link.get()
            except ProviderError as exc:
                # Connecting or signing in failed: nothing of these went out.
                _settle_all(chunk[index:], exc, mailbox, result)
                return "connection"
            try:
                answer = transport.send(
                    raw,
                    envelope_from=entry.envelope_from,
                    recipients=entry.recipients,
                    before_data=functools.partial(marks.before_data, entry),
                )
            except ClaimLost:
                log.warning("outbox %s: taken over before DATA; not sent here", entry.pk)
                link.reset()
                break
            except SendOutcomeUnknown as exc:
                link.close()
                _unknown(entry, exc, result)
                break
            except ProviderError as exc:
                if _dropped(exc):
                    link.close()
                    if attempt == 1:
                        continue  # dropped before DATA: again on a new connection
                    # Dropped twice in a row: the server is going away; later.
                    _settle_all(chunk[index:], exc, mailbox, result)
                    return "connection"
                link.reset()
                state, countdown = settle_failure(entry, exc, mailbox_address=mailbox.address)
                _count(result, entry, state, countdown)
                break
            link.messages += 1
            marks.sent(entry, sent_detail(answer))
            copies.add(entry, raw)
            result.sent += 1
            result.states[str(entry.pk)] = OutboxState.SENT
            break
    return ""


def _send_chunk_api(mailbox: Mailbox, chunk: list[Claimed], result: RunResult, link: _Link) -> str:
    """Gmail and Microsoft 365: per item, ``send_claimed``, over one client."""
    for index, entry in enumerate(chunk):
        try:
            transport = link.get()
        except ProviderError as exc:
            _settle_all(chunk[index:], exc, mailbox, result)
            return "connection"
        item = OutboxItem.objects.select_related("mailbox", "message").get(pk=entry.pk)
        item.attempts = entry.attempts  # the fence is this run's claim
        try:
            state = send_claimed(item, transport)
        except SendLater as exc:
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


def _settle_all(
    entries: list[Claimed], exc: ProviderError, mailbox: Mailbox, result: RunResult
) -> None:
    for entry in entries:
        state, countdown = settle_failure(entry, exc, mailbox_address=mailbox.address)
        _count(result, entry, state, countdown)


def _unknown(entry: Claimed, exc: SendOutcomeUnknown, result: RunResult) -> None:
    record_unknown(entry, exc, message_pk=entry.message_pk, message_id=entry.message_id)
    state = outbox_resolve_unknown(entry.pk)
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


# --- One item over an API client (Gmail, Microsoft 365) -------------------------------------------


def send_claimed(item: OutboxItem, transport: MailTransport) -> str:
    """Send one claimed item over an API ``transport`` (Gmail, Microsoft 365) with a
    committed, fenced ``data_started_at`` of its own; returns its state. Raises
    SendLater on a transient failure (the run puts the rest of its chunk back)."""
    raw = raw_of(item)

    def before_data() -> None:
        # Fenced by this claim (``attempts`` counts claims): once the sweeper has
        # queued the item again, another worker may be sending it.
        ours = OutboxItem.objects.filter(
            pk=item.pk,
            state=OutboxState.SENDING,
            attempts=item.attempts,
            data_started_at__isnull=True,
        ).update(data_started_at=timezone.now())
        if not ours:
            raise ClaimLost(str(item.pk))

    try:
        result = transport.send(
            raw,
            envelope_from=item.envelope_from,
            recipients=item.recipients,
            before_data=before_data,
        )
    except ClaimLost:
        log.warning("outbox %s: taken over before DATA; this attempt sent nothing", item.pk)
        return OutboxItem.objects.get(pk=item.pk).state
    except SendOutcomeUnknown as exc:
        record_unknown(item, exc, message_pk=item.message_id, message_id=item.message.message_id)
        return outbox_resolve_unknown(item.pk)
    except ProviderError as exc:
        state, countdown = settle_failure(item, exc, mailbox_address=item.mailbox.address)
        if countdown is not None:
            raise SendLater(str(exc), countdown) from exc
        return state
    if result.message_id and result.message_id != item.message.message_id:
        # The provider assigned its own Message-ID: replies must thread on the real one.
        Message.objects.filter(pk=item.message_id).update(message_id=result.message_id)
    record_state(item, OutboxState.SENT, sent_detail(result), sent_at=timezone.now())
    return OutboxState.SENT
