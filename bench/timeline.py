"""A timeline of each sync, for ``bench/sync.py --patch bench/timeline.py``.

Wraps the product's functions in the benchmark's sync processes (not the product)
with timestamps, and prints, for each sync that parsed at least ``MIN_ANSWERS``
messages in the parse helper, when each step started and ended (ms from the start
of ``mailbox_sync``) and in which thread, then when the helper's answers arrived (as
the worker's reader thread took them: late by up to the GIL's switch interval when
the main thread is busy). Used to see what waits for what in "100 new messages"
(bench/README.md).
"""

from __future__ import annotations

import threading
import time

from django.db.backends.base import base as database
from django.db.models import query

from inboxes import consumers, sync
from inboxes.providers.imap.session import ImapSession
from inboxes.sync import ingest, parse_helper

MIN_ANSWERS = 50
_events: list[tuple[str, float, float, str]] = []
_start: list[float] = []


def _record(label: str, began: float, ended: float) -> None:
    _events.append((label, began, ended, threading.current_thread().name))


def _wrap(owner, name: str, label: str, *, starts_sync: bool = False) -> None:
    original = getattr(owner, name)

    def timed(*args, **kwargs):
        began = time.perf_counter()
        if starts_sync:
            _start[:] = [began]
            _events.clear()
        try:
            return original(*args, **kwargs)
        finally:
            what = f"bulk_create {args[0].model.__name__}" if name == "bulk_create" else label
            _record(what, began, time.perf_counter())

    setattr(owner, name, timed)


def _print_timeline(*args, **kwargs):
    result = _release(*args, **kwargs)
    answers = [began for label, began, _, _ in _events if label == "answer"]
    if not _start or len(answers) < MIN_ANSWERS:
        return result
    zero = _start[0]
    print(
        f"--- timeline of a sync (ms from its start), {len(answers)} messages parsed by the helper"
    )
    for label, began, ended, thread in _events:
        if label != "answer":
            print(
                f"  {1000 * (began - zero):7.1f} {1000 * (ended - zero):7.1f} "
                f"{1000 * (ended - began):6.1f}  {label:34s} {thread}"
            )
    for first in range(0, len(answers), 10):
        stamps = " ".join(f"{1000 * (t - zero):.0f}" for t in answers[first : first + 10])
        print(f"  answers {first}-: {stamps}")
    return result


def _counting_answers(init):
    def start(self, *args, **kwargs):
        init(self, *args, **kwargs)
        answers = self._answers
        put = answers.put

        def arrived(item, *a, **kw):
            now = time.perf_counter()
            _record("answer", now, now)
            return put(item, *a, **kw)

        answers.put = arrived

    return start


_wrap(sync, "mailbox_syncable", "start", starts_sync=True)
for _owner, _name, _label in (
    (ImapSession, "__enter__", "imap connect + login"),
    (ImapSession, "changes", "imap select + search"),
    (ImapSession, "_fetch_batch", "imap fetch of a batch"),
    (parse_helper.ParseHelper, "submit", "batch handed to the helper"),
    (parse_helper.ParseHelper, "result", "waiting for the helper's answers"),
    (sync, "ingest_batch", "ingest_batch (all of it)"),
    (ingest, "_store_files", "  files"),
    (ingest, "bulk_insert", "  Message rows (COPY)"),
    (consumers, "deliver", "  threading"),
    (query.QuerySet, "bulk_create", "bulk_create"),
    (database.BaseDatabaseWrapper, "commit", "  commit"),
    (sync, "lease_renew", "lease renewed"),
):
    _wrap(_owner, _name, _label)
parse_helper.ParseHelper.__init__ = _counting_answers(parse_helper.ParseHelper.__init__)
_release = sync.lease_release
sync.lease_release = _print_timeline
