"""The sync's pipeline: fetched in batches, parsed one batch ahead, stored in order.

While one batch is stored (files, database) and the next one parsed (by the
parse helper, inboxes/sync/parse_helper.py), the one after is fetched: they
overlap instead of taking turns. At most three batches are in memory.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterator, Sequence

from django.conf import settings

from inboxes.mime import ParsedMessage
from inboxes.providers.base import FolderSpec, MailSession, RawMessage
from inboxes.sync.parse_helper import parsed_ahead

# An ingest batch: at most this many messages or about this many bytes (a bigger
# message comes alone), whatever the provider's own fetch batches are. The peak
# memory of a sync follows the bytes of its biggest batches, not the mailbox: three
# are in flight (one fetched, one with the parse helper, one being stored), so
# 1.5 MiB rather than 2 (bench/sync.py: 12 MiB less at the peak, ~10% slower).
INGEST_BATCH = 100
INGEST_BATCH_BYTES = 1536 * 1024
# Fetch the next batch in a helper thread while this one is parsed and stored.
PREFETCH = True


def _prefetched(batches: Iterator[list[RawMessage]]) -> Generator[list[RawMessage], None, None]:
    """``batches`` read one step ahead by a helper thread, in order, errors included.

    The thread is the only user of the provider's connection while this runs; it
    never fetches more than one batch ahead, and closing this generator (the
    consumer stops, or fails) waits for its current round trip to end."""
    ready: queue.Queue = queue.Queue()
    slot = threading.Semaphore(1)  # fetch the next batch only once the last one was taken
    stop = threading.Event()
    done = object()

    def run() -> None:
        try:
            while True:
                while not slot.acquire(timeout=0.2):
                    if stop.is_set():
                        return
                if stop.is_set():
                    return
                batch = next(batches, done)
                ready.put(batch)
                if batch is done:
                    return
        except BaseException as exc:  # handed over to the consumer, in order
            ready.put(exc)

    thread = threading.Thread(target=run, name="sync-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = ready.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            slot.release()
            yield item
            del item
    finally:
        stop.set()
        thread.join()


def _fetch_batches(
    session: MailSession, spec: FolderSpec, keys: list[str]
) -> Generator[list[RawMessage], None, None]:
    """The messages of ``keys`` in batches bounded by count and bytes, each one as it
    arrives (a message bigger than the bound comes alone)."""
    if not keys:
        return
    by_round_trip = getattr(session, "fetch_batches", None)
    if by_round_trip is not None:  # IMAP: its round trips have the same bounds
        batches = by_round_trip(spec, keys)
        yield from _prefetched(batches) if PREFETCH else batches
        return
    batch: list[RawMessage] = []
    size = 0
    for raw in session.fetch(spec, keys):
        if batch and (len(batch) >= INGEST_BATCH or size + len(raw.raw) > INGEST_BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(raw)
        size += len(raw.raw)
    if batch:
        yield batch


def parsed_batches(
    session: MailSession, spec: FolderSpec, keys: list[str]
) -> Generator[tuple[Sequence[RawMessage], list[ParsedMessage]], None, None]:
    """The batches of ``_fetch_batches``, each with its messages parsed; the parse
    helper process parses one batch ahead of the one being stored, so parsing runs
    on the second core."""
    batches = _fetch_batches(session, spec, keys)
    try:
        yield from parsed_ahead(
            batches, lambda item: item.raw, use_helper=settings.SYNC_PARSE_HELPER
        )
    finally:
        batches.close()  # stop the fetching before the session goes
