"""The outbox: every email Postkamer sends leaves exactly once.

1. ``outbox_create`` writes the message (its Message-ID fixed now) and an
   OutboxItem in the caller's transaction, and on commit asks for a send run
   of the mailbox (``enqueue_send_run``), so a worker never sees a row that was
   rolled back and a crash before commit sends nothing.
2. The run (``inboxes/send_run.py``, task ``send_outbox``) claims the due
   items of its mailbox in one conditional UPDATE (queued -> sending, ``FOR
   UPDATE SKIP LOCKED``): two runs cannot both claim one item. It sends them
   over one connection. Before an item's message data goes out its ``data_started_at``
   is committed (for a window of items at once, below), fenced by its claim
   (``ClaimLost``).
3. On the server's 250 the item is marked sent, then a copy is stored in the
   mailbox's Sent folder.

The window, and how it is closed: if a worker dies after ``data_started_at``
and before the sent mark, nobody can know whether the server took the message.
The sweeper then marks the item ``unknown`` and looks for its Message-ID in the
Sent folder (providers that keep a copy of what they relay, like Gmail and
Microsoft 365, answer yes); if it is not there the item stays ``unknown`` and is
shown to the sender, never resent blindly. A worker that dies before
``data_started_at`` sent nothing, and the item is simply sent again.

The send run's window (SMTP, ``send_run.SEND_WINDOW`` = 20): the "DATA
started" marks (fenced by their claims) are committed in blocks of 10, one block
ahead. Right before the DATA of a chunk's first item one commit marks its first
20 items (with the sent marks still pending); right before the DATA of each
later block's first item one statement marks the block after it, together with
the sent marks so far, and its commit runs while this block goes out; its result
(which of them are still the run's own) is read before the DATA of that next
block's first item. So no item's data goes out before its mark is committed, the
SMTP loop seldom waits for a commit, and never more than 20 items (two blocks)
are marked started without a committed sent mark. (A durable commit on the
benchmark machine's disk costs 1-6 ms: a commit per message would cap a run at a
few hundred sends/s, see bench/README.md.) What a worker killed mid-run leaves:

- items before the window: recorded as sent (or settled as failed/queued);
- the window, at most 20 items marked started whose sent mark was not
  committed yet: ``unknown``, never resent. Some went out (their 250 was not
  recorded yet), one may have been going out, the rest were never reached: the
  sweeper cannot tell them apart, so each is looked up in the Sent folder
  (found: sent) and otherwise says that it may or may not have been reached and
  was not sent again (``_started_in_a_window``: the marks committed ahead carry
  the time of the chunk's first ones, which went out);
- claimed items after the window: no ``data_started_at``, queued again and sent
  once by a later run.

So a worker death costs at most 20 items "unknown" (Gmail and Microsoft 365,
marked per item: at most 1), never a double send. A drop during an item's DATA in a live run still
makes only that item ``unknown`` (the run knows it went out), and refused
transactions (4xx/5xx before or at DATA) are settled at once and do not stop
the run: RSET, next item. Gmail and Microsoft 365 keep a mark per item (their
send is an HTTP request that costs more than the commit).

Retries: a transient failure puts the item back to ``queued`` with a capped
exponential backoff (``next_attempt_at``) and the run task asks Celery to run
again when the first one is due; a
mailbox waiting for its owner to sign in again holds its items until
``outbox_resume``; the sweeper (beat) re-publishes runs for due items whose
message was lost, recovers claims whose worker died, and stores missing Sent
copies.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone

from inboxes.models import Direction, Mailbox, Message, OutboxItem, OutboxState, Provider
from inboxes.parsing import parse_message
from inboxes.providers import open_session
from inboxes.providers.base import ProviderError, SendOutcomeUnknown, SendResult
from inboxes.sync.ingest import message_from_parsed

log = logging.getLogger(__name__)


class ClaimLost(Exception):
    """The sweeper gave the item to another claim while this one was still
    before DATA (it was slower than OUTBOX_SEND_LEASE_SECONDS): send nothing."""


class SendLater(Exception):
    """A transient failure: the item is queued again for ``countdown`` seconds."""

    def __init__(self, detail: str, countdown: int):
        super().__init__(detail)
        self.countdown = countdown


@dataclass(frozen=True)
class Recipient:
    address: str
    name: str = ""


def _address(recipient: Recipient) -> Address:
    return Address(display_name=recipient.name, addr_spec=recipient.address)


def build_mime(
    *,
    from_address: str,
    from_name: str,
    to: list[Recipient],
    cc: list[Recipient],
    subject: str,
    text: str,
    html: str = "",
    in_reply_to: str = "",
    references: list[str] | None = None,
) -> tuple[bytes, str]:
    """The message as it will go out, and its Message-ID."""
    domain = from_address.rsplit("@", 1)[-1]
    message_id = make_msgid(domain=domain)
    mime = EmailMessage(policy=SMTP)
    mime["From"] = Address(display_name=from_name, addr_spec=from_address)
    mime["To"] = [_address(r) for r in to]
    if cc:
        mime["Cc"] = [_address(r) for r in cc]
    mime["Subject"] = subject
    mime["Date"] = format_datetime(timezone.now())
    mime["Message-ID"] = message_id
    if in_reply_to:
        mime["In-Reply-To"] = in_reply_to
    refs = [*(references or []), *([in_reply_to] if in_reply_to else [])]
    refs = list(dict.fromkeys(ref for ref in refs if ref))
    if refs:
        mime["References"] = " ".join(refs[-20:])
    mime.set_content(text)
    if html:
        mime.add_alternative(html, subtype="html")
    return mime.as_bytes(), message_id


def outbox_create(
    *,
    mailbox: Mailbox,
    from_name: str,
    to: list[Recipient],
    cc: list[Recipient] | None = None,
    subject: str,
    text: str,
    html: str = "",
    in_reply_to: str = "",
    references: list[str] | None = None,
) -> OutboxItem:
    """Queue an email; call it inside the transaction of the user's action."""
    cc = cc or []
    raw, _ = build_mime(
        from_address=mailbox.address,
        from_name=from_name,
        to=to,
        cc=cc,
        subject=subject,
        text=text,
        html=html,
        in_reply_to=in_reply_to,
        references=references,
    )
    parsed = parse_message(raw)
    message = message_from_parsed(
        account_id=mailbox.account_id, parsed=parsed, raw=raw, direction=Direction.OUTBOUND
    )
    message.save()
    item = OutboxItem.objects.create(
        account_id=mailbox.account_id,
        mailbox=mailbox,
        message=message,
        envelope_from=mailbox.address,
        recipients=list(dict.fromkeys(r.address for r in [*to, *cc])),
    )
    transaction.on_commit(lambda: enqueue_send_run(mailbox.pk))
    return item


RUN_LEASE_SECONDS = 60


# --- Asking for a send run (deduplicated per mailbox) --------------------------------------------
#
# A lease in the cache (Redis in production), like the sync lease: "a run of
# this mailbox is queued or running". Taking it is an atomic add, so a burst of
# replies publishes one run, not one task each. It only saves duplicate runs:
# the claims keep every send single whatever the cache says, so a lost or
# expired lease costs at most a second run, and a cache outage only the
# deduplication. As with the sync, a request is written before the lease is
# tried and the holder looks at it after letting go: an item committed after
# the run's last claim is never left for the sweeper.


def _lease_key(mailbox_id) -> str:
    return f"outbox-run:{mailbox_id}"


def _requested_key(mailbox_id) -> str:
    return f"outbox-run-requested:{mailbox_id}"


def _cache_call(what: str, call, default):
    try:
        return call()
    except Exception as exc:  # noqa: BLE001 - any cache failure: carry on undeduplicated
        log.warning("outbox run lease: could not %s: %r", what, exc)
        return default


def enqueue_send_run(mailbox_id, *, countdown: int | None = None, force: bool = False) -> bool:
    """Ask for a send run of the mailbox; publishes one unless a run holds the lease
    (that run sees the request). ``force`` publishes anyway (the sweeper: the holder
    may be dead). Returns whether a task was published."""
    from inboxes.tasks import send_outbox

    mailbox_id = str(mailbox_id)
    _cache_call(
        "request", lambda: cache.set(_requested_key(mailbox_id), 1, RUN_LEASE_SECONDS), None
    )
    if not force:
        taken = _cache_call(
            "take the lease",
            lambda: cache.add(_lease_key(mailbox_id), "queued", RUN_LEASE_SECONDS),
            True,
        )
        if not taken:
            return False
    send_outbox.apply_async(args=[mailbox_id], countdown=countdown)
    return True


def run_lease_hold(mailbox_id) -> None:
    """The run holds (or renews) the lease; called at its start and after every chunk."""
    _cache_call(
        "hold the lease",
        lambda: cache.set(_lease_key(mailbox_id), "running", RUN_LEASE_SECONDS),
        None,
    )


def run_requests_answered(mailbox_id) -> None:
    """Called before a run's claims: everything committed so far will be claimed."""
    _cache_call("clear requests", lambda: cache.delete(_requested_key(mailbox_id)), None)


def run_lease_release(mailbox_id) -> bool:
    """Let go of the lease. True when a request came meanwhile and the lease was
    taken back: the caller runs on (the requester's publish was refused)."""
    _cache_call("release the lease", lambda: cache.delete(_lease_key(mailbox_id)), None)
    if not _cache_call("read requests", lambda: cache.get(_requested_key(mailbox_id)), None):
        return False
    return bool(
        _cache_call(
            "take the lease back",
            lambda: cache.add(_lease_key(mailbox_id), "running", RUN_LEASE_SECONDS),
            False,
        )
    )


# --- Outcomes -------------------------------------------------------------------------------------


def _backoff(attempt: int) -> int:
    return min(settings.OUTBOX_RETRY_BASE_SECONDS * 2 ** max(attempt - 1, 0), 3600)


def settle_failure(item, exc: ProviderError, *, mailbox_address: str) -> tuple[str, int | None]:
    """Record a send that failed for sure (nothing was delivered): ``(state,
    countdown)``, countdown set when the item is queued again for a retry.
    ``item`` needs ``pk`` and ``attempts`` (the claim's)."""
    if exc.reauth:
        # Not the message's fault: it waits for the owner to sign in again
        # (outbox_resume sends it then) instead of failing for good.
        OutboxItem.objects.filter(pk=item.pk, state=OutboxState.SENDING).update(
            state=OutboxState.QUEUED,
            detail=f"Waiting for {mailbox_address} to be reconnected: {exc}"[:4000],
            next_attempt_at=timezone.now() + timedelta(days=365),
        )
        return OutboxState.QUEUED, None
    if exc.permanent:
        _mark(item, OutboxState.FAILED, str(exc))
        return OutboxState.FAILED, None
    attempts = item.attempts
    if attempts >= settings.OUTBOX_MAX_ATTEMPTS:
        _mark(item, OutboxState.FAILED, f"Gave up after {attempts} attempts: {exc}")
        return OutboxState.FAILED, None
    countdown = _backoff(attempts)
    OutboxItem.objects.filter(pk=item.pk, state=OutboxState.SENDING).update(
        state=OutboxState.QUEUED,
        detail=f"Attempt {attempts} failed, retrying: {exc}"[:4000],
        next_attempt_at=timezone.now() + timedelta(seconds=countdown),
    )
    return OutboxState.QUEUED, countdown


def record_unknown(item, exc: SendOutcomeUnknown, *, message_pk, message_id: str) -> None:
    """The data went out and no answer came back: ``unknown`` until the Sent lookup."""
    if exc.message_id and exc.message_id != message_id:
        # Look it up later under the id the provider really used.
        Message.objects.filter(pk=message_pk).update(message_id=exc.message_id)
    _mark(item, OutboxState.UNKNOWN, str(exc))


def sent_detail(result: SendResult) -> str:
    detail = result.detail
    if result.refused:
        detail += " (refused: " + "; ".join(f"{r}: {t}" for r, t in result.refused.items()) + ")"
    return detail


def send_claimed(item: OutboxItem, transport) -> str:
    """Send one claimed item over an API ``transport`` (Gmail, Microsoft 365) with a
    committed, fenced ``data_started_at`` of its own; returns its state. Raises
    SendLater on a transient failure (the run puts the rest of its chunk back)."""
    raw = _raw_of(item)

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
    _mark(item, OutboxState.SENT, sent_detail(result), sent_at=timezone.now())
    return OutboxState.SENT


def _raw_of(item: OutboxItem) -> bytes:
    with item.message.raw.open("rb") as handle:
        return handle.read()


def _mark(item, state: str, detail: str, **extra) -> None:
    OutboxItem.objects.filter(pk=item.pk).update(state=state, detail=detail[:4000], **extra)
    log.info("outbox %s -> %s: %s", item.pk, state, detail)


def outbox_store_sent_copy(item_id) -> bool:
    """A copy in the mailbox's Sent folder, as a mail client keeps. Best effort:
    the sweeper tries again later; the next sync recognises the copy by content."""
    item = OutboxItem.objects.select_related("mailbox", "message").get(pk=item_id)
    if item.sent_copy_stored or item.mailbox.provider != Provider.IMAP:
        # Gmail and Microsoft 365 keep what they send in Sent by themselves.
        return item.sent_copy_stored
    try:
        with open_session(item.mailbox) as session:
            session.store_sent_copy(_raw_of(item))
    except ProviderError as exc:
        log.warning("could not store the sent copy of %s: %s", item.pk, exc)
        return False
    OutboxItem.objects.filter(pk=item.pk).update(sent_copy_stored=True)
    return True


def outbox_resolve_unknown(item_id) -> str:
    """Look for an item of unknown outcome in the Sent folder before anything else."""
    item = OutboxItem.objects.select_related("mailbox", "message").get(pk=item_id)
    if item.state != OutboxState.UNKNOWN:
        return item.state
    try:
        with open_session(item.mailbox) as session:
            sent = session.sent_folder()
            found = sent is not None and session.find_message_id(sent, item.message.message_id)
    except ProviderError as exc:
        log.warning("could not look up %s in Sent: %s", item.pk, exc)
        return OutboxState.UNKNOWN
    if found:
        _mark(
            item,
            OutboxState.SENT,
            "Found in the Sent folder after the connection dropped.",
            sent_at=timezone.now(),
            sent_copy_stored=True,
        )
        return OutboxState.SENT
    if _started_in_a_window(item):
        cause = (
            "the worker stopped while a batch of messages, this one included, was going out "
            "over one connection (it may or may not have been reached)"
        )
    else:
        cause = "the connection or the worker stopped while the message was going out"
    OutboxItem.objects.filter(pk=item.pk, state=OutboxState.UNKNOWN).update(
        detail=(
            f"Delivery could not be confirmed: {cause}, and it is not in the Sent folder. "
            "It was not sent again automatically; send it again if the recipient did not get it."
        )
    )
    return OutboxState.UNKNOWN


def _started_in_a_window(item: OutboxItem) -> bool:
    """Was the item's "DATA started" mark shared with others (a send run with a
    window wider than one, see send_run.SEND_WINDOW)? Then it may never have been
    reached, and the detail must not claim it went out."""
    if item.data_started_at is None:
        return False
    return (
        OutboxItem.objects.filter(mailbox_id=item.mailbox_id, data_started_at=item.data_started_at)
        .exclude(pk=item.pk)
        .exists()
    )


def outbox_resume(mailbox_id) -> int:
    """After a reconnect: send what waited for it, now (one run, on commit)."""
    waiting = OutboxItem.objects.filter(mailbox_id=mailbox_id, state=OutboxState.QUEUED).update(
        next_attempt_at=timezone.now()
    )
    if waiting:
        transaction.on_commit(lambda: enqueue_send_run(mailbox_id))
    return waiting


def outbox_sweep() -> dict[str, int]:
    """Run by beat: re-publish lost sends (the database is the truth, not the broker),
    recover sends whose worker died, and store missing Sent copies."""
    now = timezone.now()
    lease = timedelta(seconds=settings.OUTBOX_SEND_LEASE_SECONDS)
    counts = {"requeued": 0, "runs": 0, "recovered": 0, "unknown": 0, "copies": 0}
    stale = OutboxItem.objects.filter(state=OutboxState.SENDING, claimed_at__lt=now - lease)
    # Nothing went out before data_started_at: these are safe to send again.
    counts["recovered"] = stale.filter(data_started_at__isnull=True).update(
        state=OutboxState.QUEUED, detail="The worker stopped before sending; queued again."
    )
    for item_id in stale.filter(data_started_at__isnull=False).values_list("pk", flat=True):
        OutboxItem.objects.filter(pk=item_id, state=OutboxState.SENDING).update(
            state=OutboxState.UNKNOWN, detail="The worker stopped while the message was going out."
        )
        outbox_resolve_unknown(item_id)
        counts["unknown"] += 1
    due = OutboxItem.objects.filter(state=OutboxState.QUEUED).filter(
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now - timedelta(seconds=5))
    )
    # Older than a few seconds: their run was lost (or its worker died), not just slow
    # to start. Recovered items (claimed_at is old) count at once.
    due = due.filter(Q(created_at__lt=now - timedelta(seconds=5)) | Q(claimed_at__lt=now - lease))
    per_mailbox = due.values("mailbox_id").annotate(items=Count("pk")).order_by()
    for row in per_mailbox[:500]:
        # Forced: the lease may be held by a run whose worker died.
        enqueue_send_run(row["mailbox_id"], force=True)
        counts["requeued"] += row["items"]
        counts["runs"] += 1
    missing_copies = OutboxItem.objects.filter(
        state=OutboxState.SENT,
        sent_copy_stored=False,
        mailbox__provider=Provider.IMAP,
        sent_at__gt=now - timedelta(days=2),
        sent_at__lt=now - timedelta(seconds=30),
    )
    for item_id in missing_copies.values_list("pk", flat=True)[:100]:
        counts["copies"] += int(outbox_store_sent_copy(item_id))
    return counts
