"""The sync benchmark's "100 new messages": a poll with nothing new, rounds of 100
new messages and one sync each, and the IDLE watcher's latency (IMAP, in a process
of its own: ``bench/sync.py --child incremental``); for Gmail and Graph one sync
through history / the deltaLink (``--child incremental-oauth``).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from bench import corpus, harness
from bench.sync_fakes import fake_call
from bench.sync_full import apply_patch, install_phase_timers, profiler_report, profiler_start

NEW_MESSAGES = 100


def child_incremental(args) -> dict:
    harness.django_setup()
    from django.db import connection

    from conversations.models import ConversationMessage
    from inboxes.sync import mailbox_sync
    from inboxes.sync.watch import watch_mailbox

    connection.ensure_connection()
    apply_patch(args.patch)
    writer = corpus.MaildirWriter(Path(args.maildir), args.uid, args.gid)
    out: dict = {}

    # A poll with nothing new (also warms imports and the DB connection, as in a worker).
    t = time.perf_counter()
    noop = mailbox_sync(args.mailbox)
    out["noop_seconds"] = time.perf_counter() - t
    out["noop_imported"] = noop.imported

    # 100 new messages, then one sync; again for each round (one sample swings
    # with whatever else the machine does: the median is the figure).
    timer = install_phase_timers() if args.phases else None
    rounds: list[float] = []
    imported: list[int] = []
    for number in range(args.new_rounds):
        corpus.load(writer, args.start + number * NEW_MESSAGES, NEW_MESSAGES, new=True)
        profiler = profiler_start(args.profile_file if number == 0 else None)
        t = time.perf_counter()
        result = mailbox_sync(args.mailbox)
        rounds.append(time.perf_counter() - t)
        imported.append(result.imported)
        profiler_report(profiler, args.profile_file, 25)
    out["incremental_rounds"] = rounds
    out["incremental_seconds"] = sorted(rounds)[len(rounds) // 2]
    out["incremental_phases"] = (
        {label: value / len(rounds) for label, value in timer.seconds.items()} if timer else {}
    )
    # every round must have imported its 100
    out["incremental_imported"] = min(imported)

    if args.idle:
        out["idle"] = _idle_latency(
            args,
            writer,
            mailbox_sync,
            watch_mailbox,
            ConversationMessage,
            args.start + args.new_rounds * NEW_MESSAGES,
        )
    out["peak_kib"] = harness.proc_status_kib("VmHWM")
    return out


def _idle_latency(args, writer, mailbox_sync, watch_mailbox, ConversationMessage, start) -> dict:
    """Deliver messages while the IDLE watcher runs; time until all are in the inbox.

    Two scenarios with one watcher: a burst (100 messages as fast as the disk
    takes them) and a trickle (100 messages, one every 20 ms, over 2 s)."""
    from django.db import close_old_connections

    syncs: list[dict] = []
    stop = threading.Event()
    busy = threading.Event()
    after_sync: list = []  # deliveries to make right after the next on_change sync

    def on_change(mailbox_id: str) -> None:
        busy.set()
        t = time.perf_counter()
        try:
            result = mailbox_sync(mailbox_id)
            imported = result.imported
        except Exception as exc:  # recorded, the watcher goes on
            imported = f"error: {exc!r}"
        syncs.append({"at": t, "seconds": time.perf_counter() - t, "imported": imported})
        while after_sync:
            after_sync.pop(0)()
        close_old_connections()
        busy.clear()

    watcher = threading.Thread(
        target=watch_mailbox, args=(args.mailbox, on_change, stop), daemon=True
    )
    watcher.start()
    deadline = time.monotonic() + 30
    while not syncs and time.monotonic() < deadline:  # its catch-up sync
        time.sleep(0.01)
    time.sleep(0.5)  # let it enter IDLE

    def visible() -> int:
        return ConversationMessage.objects.filter(inbox_id=args.inbox).count()

    def scenario(
        first: int, interval: float, count: int = NEW_MESSAGES, race: bool = False
    ) -> dict:
        time.sleep(1.0)  # the watcher is back in IDLE
        before = visible()
        first_delivery = time.perf_counter()
        last = first + count - 1
        if race:
            # The last message arrives right after the sync that the first one
            # triggered, before the watcher is back in IDLE.
            after_sync.append(lambda n=last: writer.write(n, corpus.message(n), new=True))
            last -= 1
        for i in range(first, last + 1):
            if interval:
                pause = first_delivery + (i - first) * interval - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
            writer.write(i, corpus.message(i), new=True)
        last_delivery = time.perf_counter()
        target = before + count
        first_visible = None
        limit = time.perf_counter() + (5 if race else args.idle_timeout)
        if race:
            while after_sync and time.perf_counter() < limit:
                time.sleep(0.005)
            last_delivery = time.perf_counter()
        count = before
        while time.perf_counter() < limit:
            count = visible()
            if count > before and first_visible is None:
                first_visible = time.perf_counter()
            if count >= target:
                break
            time.sleep(0.005)
        done = time.perf_counter()
        settle = time.monotonic() + 5
        while busy.is_set() and time.monotonic() < settle:  # let a running on_change finish
            time.sleep(0.01)
        all_visible = count >= target
        out = {
            "interval_ms": interval * 1000,
            "delivery_seconds": last_delivery - first_delivery,
            "visible": count - before,
            "expected": target - before,
            "all_visible": all_visible,
            "first_visible_after_first_delivery": (
                first_visible - first_delivery if first_visible else None
            ),
            "all_visible_after_last_delivery": done - last_delivery if all_visible else None,
            "all_visible_after_first_delivery": done - first_delivery if all_visible else None,
            "waited_seconds": done - first_delivery,
            "on_change_syncs": [
                {
                    "started_after_first_delivery": s["at"] - first_delivery,
                    "seconds": s["seconds"],
                    "imported": s["imported"],
                }
                for s in syncs
                if s["at"] >= first_delivery - 0.001
            ],
        }
        if not all_visible:
            # Nothing is lost: the next poll (or the next mail) brings the rest in.
            t = time.perf_counter()
            late = mailbox_sync(args.mailbox)
            out["catch_up_sync"] = {
                "seconds": time.perf_counter() - t,
                "imported": late.imported,
                "ran": late.ran,
                "reason": late.reason,
                "visible_after": visible() - before,
            }
            time.sleep(0.5)  # the watcher goes back to IDLE
        return out

    burst = scenario(start, 0.0)
    trickle = scenario(start + NEW_MESSAGES, 0.02)
    race = scenario(start + 2 * NEW_MESSAGES, 0.0, count=2, race=True)
    stop.set()
    return {"burst": burst, "trickle": trickle, "race": race}


def child_incremental_oauth(args) -> dict:
    """A poll with nothing new, then 100 new messages put into the fake and one sync
    (Gmail: history.list from the stored historyId; Graph: the stored deltaLink)."""
    harness.django_setup()
    from django.db import connection

    from inboxes.sync import mailbox_sync

    connection.ensure_connection()
    apply_patch(args.patch)
    out: dict = {}
    t = time.perf_counter()
    noop = mailbox_sync(args.mailbox)
    out["noop_seconds"] = time.perf_counter() - t
    out["noop_imported"] = noop.imported
    out["noop_ran"] = noop.ran
    timer = install_phase_timers(args.provider) if args.phases else None
    control = tuple(json.loads(args.fake_control))
    out["delivery"] = fake_call(control, "deliver", start=args.start, count=NEW_MESSAGES)
    profiler = profiler_start(args.profile_file)
    t = time.perf_counter()
    result = mailbox_sync(args.mailbox)
    out["incremental_seconds"] = time.perf_counter() - t
    out["incremental_phases"] = dict(timer.seconds) if timer else {}
    profiler_report(profiler, args.profile_file, 25)
    out["incremental_imported"] = result.imported
    out["peak_kib"] = harness.proc_status_kib("VmHWM")
    return out
