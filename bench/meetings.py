"""Meetings benchmark: free slots over 60 days beside a busy calendar, and racing bookings.

    .venv/bin/python bench/meetings.py [--rounds 200] [--events 2000] [--days 60]
                                       [--attempts 100] [--slots 10] [--workers 25]
                                       [--db NAME] [--keep] [--json PATH]

On PostgreSQL when DATABASE_URL points at it (a database of its own, ``--db``, made on
127.0.0.1:5432 and dropped at the end), else on a SQLite file in a temp dir; in this
process:

1. setup (not timed): an account, its user, a scheduling link (Europe/Amsterdam,
   weekdays 09:00-17:00, 30 minutes, buffers of 10 minutes each side), 40 confirmed
   bookings over the 60 days, and a calendar of ``--events`` busy intervals (15 to 120
   minutes, seeded) given to ``free_slots`` as its ``busy`` list (what the connected
   calendar's ``busy_times`` answers, without a provider behind it);
2. **slots**: ``meetings.slots.free_slots`` for 60 days in a visitor's zone
   (America/New_York), ``--rounds`` times: p50 / p95 in ms. Target (issue 17): p95 <
   50 ms;
3. **baseline**: a bare loop over the same days doing the least any such code must:
   candidate starts at a fixed offset, each looked up among the sorted busy intervals
   with one bisect; no zoneinfo, no database. The ratio slots / baseline says what the
   product adds (zones and DST, the claims query, buffers, building the answer);
4. **race**: ``--attempts`` bookings on ``--slots`` slots (10 x 10) from ``--workers``
   threads, each with its own database connection, let go at once: exactly one booking
   per slot must win, every other attempt must get ``slot_unavailable``. (Not a
   thread per attempt: 100 connections is PostgreSQL's default max_connections.)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from bisect import bisect_right
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import harness  # noqa: E402

harness.use_project_root()

DB_NAME = "postkamer_bench_meetings"
TARGET_P95_MS = 50.0
NOW = datetime(2026, 3, 1, 6, 0, tzinfo=UTC)  # a Sunday: the 60 days start the day after
FIRST_DAY = date(2026, 3, 2)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--attempts", type=int, default=100)
    parser.add_argument("--slots", type=int, default=10)
    parser.add_argument("--workers", type=int, default=25)
    parser.add_argument("--db", default=DB_NAME)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    args.sqlite = not os.environ.get("DATABASE_URL", "").startswith(
        ("postgres://", "postgresql://")
    )
    return args


def environment(args: argparse.Namespace) -> Path:
    data_dir = Path(tempfile.mkdtemp(prefix="postkamer-bench-meetings-"))
    os.environ.update(
        DJANGO_SETTINGS_MODULE="config.settings_test",
        POSTKAMER_DATA_DIR=str(data_dir),
        HTTPS="false",
        LOG_LEVEL="WARNING",
    )
    os.environ.pop("CACHE_URL", None)
    if args.sqlite:
        os.environ.pop("DATABASE_URL", None)
    else:
        harness.create_database(args.db)
        os.environ["DATABASE_URL"] = harness.pg_url(args.db, "postgres")
    harness.django_setup()
    harness.migrate()
    return data_dir


def make_world(days: int):
    from accounts.models import Account, User
    from meetings.bookings import booking_create
    from meetings.links import link_create

    account = Account.objects.create(name="Bench", plan="professional")
    owner = User.objects.create_user(
        email="bo@bench.example.com", password="x", account=account, full_name="Bo Bench"
    )
    link = link_create(
        owner=owner,
        data={
            "name": "Intro",
            "slug": "bench-intro",
            "durations": [30],
            "timezone": "Europe/Amsterdam",
            "buffer_before": 10,
            "buffer_after": 10,
            "min_notice_minutes": 0,
            "days_ahead": days + 30,
        },
    )
    # 40 bookings spread over the weekdays (10:00 Amsterdam, every other weekday or so).
    booked = 0
    day = FIRST_DAY
    while booked < 40 and day < FIRST_DAY + timedelta(days=days):
        if day.weekday() < 5:
            start = datetime(day.year, day.month, day.day, 9, 0, tzinfo=UTC)
            booking_create(
                link=link,
                start=start,
                duration=30,
                name=f"Visitor {booked}",
                email=f"visitor{booked}@example.com",
                answers={},
                timezone="UTC",
                now=NOW,
            )
            booked += 1
        day += timedelta(days=1)
    return owner, link


def busy_calendar(events: int, days: int, seed: int = 17):
    from meetings.calendars import Interval

    rng = random.Random(seed)
    start = datetime(FIRST_DAY.year, FIRST_DAY.month, FIRST_DAY.day, tzinfo=UTC)
    intervals = []
    for _ in range(events):
        day = rng.randrange(days + 1)
        minute = rng.randrange(0, 24 * 60, 5)
        length = rng.choice((15, 30, 30, 45, 60, 60, 90, 120))
        begin = start + timedelta(days=day, minutes=minute)
        intervals.append(Interval(begin, begin + timedelta(minutes=length)))
    return intervals


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


def measure_slots(link, busy, args) -> tuple[list[float], int]:
    from zoneinfo import ZoneInfo

    from meetings.slots import free_slots

    visitor = ZoneInfo("America/New_York")
    timings = []
    count = 0
    for _ in range(args.rounds):
        began = time.perf_counter()
        found = free_slots(
            link, start=FIRST_DAY, days=args.days, tz=visitor, duration=30, now=NOW, busy=busy
        )
        timings.append((time.perf_counter() - began) * 1000)
        count = len(found)
    return timings, count


def measure_baseline(busy, args) -> tuple[list[float], int]:
    """The least work: fixed-offset candidates, one bisect each among merged busy spans."""
    timings = []
    count = 0
    for _ in range(args.rounds):
        began = time.perf_counter()
        spans = sorted((int(b.start.timestamp()), int(b.end.timestamp())) for b in busy)
        starts: list[int] = []
        ends: list[int] = []
        for s, e in spans:
            if ends and s <= ends[-1]:
                ends[-1] = max(ends[-1], e)
            else:
                starts.append(s)
                ends.append(e)
        found = []
        base = int(datetime(2026, 3, 2, 8, 0, tzinfo=UTC).timestamp())
        for day in range(args.days):
            if (FIRST_DAY + timedelta(days=day)).weekday() >= 5:
                continue
            for step in range(0, 8 * 60 - 30 + 1, 15):
                slot = base + day * 86400 + step * 60
                index = bisect_right(ends, slot - 600)
                if index < len(starts) and starts[index] < slot + 1800 + 600:
                    continue
                found.append((slot, slot + 1800))
        timings.append((time.perf_counter() - began) * 1000)
        count = len(found)
    return timings, count


def race(owner, args) -> dict:
    from django.db import connections

    from meetings.bookings import booking_create
    from meetings.errors import SlotUnavailable
    from meetings.links import link_create
    from meetings.models import Booking

    link = link_create(
        owner=owner,
        data={
            "name": "Race",
            "slug": "bench-race",
            "durations": [60],
            "timezone": "UTC",
            "availability": {"sat": [["00:00", "24:00"]]},
            "min_notice_minutes": 0,
            "days_ahead": 365,
        },
    )
    saturday = datetime(2026, 5, 2, 0, 0, tzinfo=UTC)
    slots = [saturday + timedelta(hours=h) for h in range(args.slots)]
    starts = [slots[n % len(slots)] for n in range(args.attempts)]
    workers = min(args.workers, len(starts))
    barrier = threading.Barrier(workers)
    won: list[int] = []
    lost: list[int] = []
    errors: list[str] = []
    lock = threading.Lock()

    def run(worker: int) -> None:
        try:
            barrier.wait(timeout=60)
            for n in range(worker, len(starts), workers):
                try:
                    booking_create(
                        link=link,
                        start=starts[n],
                        duration=60,
                        name=f"Racer {n}",
                        email=f"racer{n}@example.com",
                        answers={},
                        timezone="UTC",
                        now=NOW,
                    )
                    with lock:
                        won.append(n)
                except SlotUnavailable:
                    with lock:
                        lost.append(n)
        except BaseException as exc:  # noqa: BLE001 - reported
            with lock:
                errors.append(repr(exc))
        finally:
            connections.close_all()

    began = time.perf_counter()
    threads = [threading.Thread(target=run, args=(w,)) for w in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - began
    booked = sorted(Booking.objects.filter(link=link).values_list("start", flat=True))
    return {
        "attempts": args.attempts,
        "slots": args.slots,
        "workers": workers,
        "won": len(won),
        "lost": len(lost),
        "errors": errors[:5],
        "one_per_slot": booked == slots,
        "seconds": round(seconds, 2),
    }


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    data_dir = environment(args)
    try:
        from django.db import connection

        owner, link = make_world(args.days)
        busy = busy_calendar(args.events, args.days)
        measure_slots(link, busy, argparse.Namespace(**{**vars(args), "rounds": 5}))  # warm
        slot_ms, slot_count = measure_slots(link, busy, args)
        base_ms, base_count = measure_baseline(busy, args)
        raced = race(owner, args)
        result = {
            "database": connection.vendor,
            "days": args.days,
            "busy_events": args.events,
            "rounds": args.rounds,
            "slots_found": slot_count,
            "baseline_found": base_count,
            "slots_p50_ms": round(statistics.median(slot_ms), 2),
            "slots_p95_ms": round(percentile(slot_ms, 0.95), 2),
            "baseline_p50_ms": round(statistics.median(base_ms), 2),
            "baseline_p95_ms": round(percentile(base_ms, 0.95), 2),
            "race": raced,
            "load": harness.loadavg(),
        }
        result["ratio_p50"] = round(
            result["slots_p50_ms"] / max(result["baseline_p50_ms"], 1e-6), 2
        )
        met_slots = result["slots_p95_ms"] < TARGET_P95_MS
        met_race = (
            raced["won"] == args.slots
            and raced["lost"] == args.attempts - args.slots
            and raced["one_per_slot"]
            and not raced["errors"]
        )
        print(
            f"slots, {args.days} days, {args.events} busy events, {slot_count} free slots "
            f"({connection.vendor}, {args.rounds} rounds): p50 {result['slots_p50_ms']} ms, "
            f"p95 {result['slots_p95_ms']} ms (target < {TARGET_P95_MS:g}: "
            f"{'yes' if met_slots else 'NO'})"
        )
        print(
            f"baseline loop ({base_count} slots): p50 {result['baseline_p50_ms']} ms, "
            f"p95 {result['baseline_p95_ms']} ms; ratio slots / baseline (p50) "
            f"{result['ratio_p50']}"
        )
        print(
            f"race: {raced['attempts']} attempts on {raced['slots']} slots from "
            f"{raced['workers']} threads in {raced['seconds']} s: {raced['won']} booked, "
            f"{raced['lost']} slot_unavailable, errors {raced['errors'] or 'none'} "
            f"(exactly one per slot: {'yes' if met_race else 'NO'})"
        )
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2, default=str))
        return 0 if met_slots and met_race else 1
    finally:
        from django.db import connections

        connections.close_all()
        if not args.sqlite and not args.keep:
            harness.drop_database(args.db)
        import shutil

        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
