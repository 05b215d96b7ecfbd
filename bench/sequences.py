"""Sequence steps benchmark: N steps falling due at once, into the outbox, none twice.

    .venv/bin/python bench/sequences.py [--steps 10000] [--quick] [--runners 2]
                                        [--chunk 200] [--profile] [--keep]

On PostgreSQL (a database of its own, dropped at the end), in this process:

1. setup (not timed): an account, its user, a connected personal mailbox, a
   sequence of two steps with contact variables, N contacts each enrolled with
   step 1 due now;
2. **baseline**: ``inboxes.outbox.outbox_create`` of N similar emails, in
   transactions of ``--chunk``: what putting N items into the outbox costs by
   itself (rolled back afterwards, so the step run starts from the same outbox);
3. **step run**: ``crm.steps.steps_send_due`` as the beat task runs it, until no
   step is due: steps per second from its start to its end; the ratio step run /
   baseline says what the sequences add on top of the outbox (the enrolment's
   claim, the StepSend row, rendering, the CRM email and its timeline lines);
4. **racing runners** (``--runners``, default 2): the same again for a second set
   of N enrolments with that many runner processes started at once (beat running
   twice): steps per second of all of them together, each step sent once.

Checks afterwards: one StepSend and one outbox item per enrolment and step, no
recipient twice. Target (issue 14): >= 500 steps/s, none twice.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import harness  # noqa: E402

harness.use_project_root()

SCRIPT = Path(__file__).resolve()
DB_NAME = "postkamer_bench_sequences"
TARGET = 500


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true", help="2,000 steps")
    parser.add_argument("--runners", type=int, default=2, help="racing runner processes")
    parser.add_argument("--chunk", type=int, default=200, help="steps per transaction")
    parser.add_argument("--profile", action="store_true", help="cProfile of the step run")
    parser.add_argument("--db", default=DB_NAME)
    parser.add_argument("--json")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--no-snapshot", action="store_true")
    parser.add_argument("--in-snapshot")
    parser.add_argument("--child")
    parser.add_argument("--result-file")
    parser.add_argument("--start-at", type=float, default=0.0)
    args = parser.parse_args(argv)
    if args.quick:
        args.steps = 2_000
    return args


# --- setup ---------------------------------------------------------------------------------------


def make_world(steps: int):
    """An account, its user and personal mailbox, a two-step sequence."""
    from datetime import time as clock

    from accounts.models import Account, User
    from crm.sequences import SequenceInput, StepInput, sequence_create
    from inboxes.models import Mailbox, MailboxKind

    account = Account.objects.create(name="Bench", plan="professional")
    owner = User.objects.create_user(
        email="rep@bench.example.com", password="x", account=account, full_name="Rita Rep"
    )
    mailbox = Mailbox.objects.create(
        account=account,
        address="rep@bench.example.com",
        canonical_address="rep@bench.example.com",
        kind=MailboxKind.PERSONAL,
        owner=owner,
        connected_by=owner,
    )
    sequence = sequence_create(
        owner=owner,
        data=SequenceInput(
            name="Bench follow-up",
            mailbox=mailbox,
            window_start=clock(0, 0),
            window_end=clock(23, 59, 59),
            timezone="UTC",
            business_days_only=False,
            steps=[
                StepInput(
                    subject='Hello {{ contact.first_name | default: "there" }}',
                    text="Hi {{ contact.first_name }},\n\nhow is {{ contact.company }} doing?\n",
                    html="<p>Hi {{ contact.first_name }},</p><p>how is {{ contact.company }}?</p>",
                ),
                StepInput(text="Just following up.", delay_days=3),
            ],
        ),
    )
    return account, owner, mailbox, sequence


def enrol_due(account, owner, sequence, start: int, count: int) -> None:
    """``count`` contacts enrolled with step 1 due a minute ago (bulk: setup, not timed)."""
    from datetime import timedelta

    from django.utils import timezone

    from crm.models import Contact, Enrollment

    contacts = Contact.objects.bulk_create(
        Contact(
            account=account,
            email=f"prospect{n}@customer{n % 97}.example.com",
            canonical_email=f"prospect{n}@customer{n % 97}.example.com",
            name=f"Pat{n} Prospect",
            company=f"Customer {n % 97}",
            owner=owner,
        )
        for n in range(start, start + count)
    )
    due = timezone.now() - timedelta(minutes=1)
    Enrollment.objects.bulk_create(
        Enrollment(
            account=account, sequence=sequence, contact=c, next_step_at=due, enrolled_by=owner
        )
        for c in contacts
    )


# --- measurements --------------------------------------------------------------------------------


def baseline(mailbox, count: int, chunk: int) -> float:
    """``outbox_create`` of ``count`` emails in transactions of ``chunk``; rolled back."""
    from django.db import transaction

    from inboxes.outbox import Recipient, outbox_create

    class Undo(Exception):
        pass

    started = time.perf_counter()
    try:
        with transaction.atomic():
            for first in range(0, count, chunk):
                with transaction.atomic():
                    for n in range(first, min(first + chunk, count)):
                        outbox_create(
                            mailbox=mailbox,
                            from_name="Rita Rep",
                            to=[Recipient(f"prospect{n}@customer.example.com", f"Pat{n}")],
                            subject=f"Hello Pat{n}",
                            text=f"Hi Pat{n},\n\nhow is Customer {n % 97} doing?\n",
                            html=f"<p>Hi Pat{n},</p><p>how is Customer {n % 97}?</p>",
                        )
            seconds = time.perf_counter() - started
            raise Undo
    except Undo:
        pass
    return seconds


def phase_timer():
    """Where the step run's time goes (in this process only)."""
    from crm import sending, steps
    from inboxes.outbox import compose, enqueue

    timer = harness.PhaseTimer()
    # Before the composer built the row itself (the old code, measured in pairs):
    timer.wrap(enqueue, "build_mime", "compose MIME (engine)")
    timer.wrap(enqueue, "parse_message", "parse it back (engine)")
    # Now: composing, of which the row's fields as parse_message would read them.
    timer.wrap(enqueue, "compose", "compose MIME and the row's fields (engine)")
    timer.wrap(compose, "parsed_as_composed", "  of which the row's fields (engine)")
    timer.wrap(sending, "email_body", "CRM: font and text part")
    timer.wrap(sending, "with_tracking", "CRM: tracking links and pixel")
    timer.wrap(enqueue, "messages_from_parsed", "raw files (engine)")
    timer.wrap(enqueue, "bulk_insert", "Message rows (engine)")
    timer.wrap(sending, "outbox_create_many", "outbox_create_many (all of the engine)")
    timer.wrap(sending, "timeline_add_same", "timeline: email lines")
    timer.wrap(steps, "emails_queue_many", "emails_queue_many (engine + CRM emails)")
    timer.wrap(steps, "_draft", "render variables")
    timer.wrap(steps, "_advance", "advance enrolments")
    timer.wrap(steps, "timeline_add_same", "timeline: sequence lines")
    timer.wrap(steps, "_due_chunk", "select due chunk")
    return timer


def step_run(chunk: int, profile: bool, phases: bool = False) -> tuple[float, dict]:
    from crm.steps import steps_send_due

    timer = phase_timer() if phases else None
    profiler = cProfile.Profile() if profile else None
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    run = steps_send_due(chunk_size=chunk)
    if profiler:
        profiler.disable()
    seconds = time.perf_counter() - started
    if timer:
        timer.restore()
        for label, spent in timer.seconds.items():
            print(f"  {label}: {1000 * spent / max(run.sent, 1):.2f} ms per step")
    if profiler:
        stats = pstats.Stats(profiler)
        stats.sort_stats("cumulative").print_stats(35)
    return seconds, {"sent": run.sent, "skipped": run.skipped}


def child_runner(args: argparse.Namespace) -> None:
    """One racing runner: waits for the common start, runs, reports."""
    harness.django_setup()
    from django.db import connection

    connection.ensure_connection()
    while time.time() < args.start_at:
        time.sleep(0.001)
    seconds, run = step_run(args.chunk, False)
    Path(args.result_file).write_text(json.dumps({"seconds": seconds, "ended": time.time(), **run}))


def racing_runs(work, runners: int, chunk: int) -> tuple[float, int, int]:
    """``runners`` processes started at once; wall time from the common start to the last end."""
    start_at = time.time() + 3.0  # each child sets Django up first
    processes, files = [], []
    for n in range(runners):
        result = work.root / f"runner-{n}.json"
        files.append(result)
        command = [
            sys.executable,
            str(SCRIPT),
            "--child",
            "runner",
            "--chunk",
            str(chunk),
            "--start-at",
            str(start_at),
            "--result-file",
            str(result),
        ]
        processes.append(subprocess.Popen(command, cwd=harness.ROOT))
    for process in processes:
        if process.wait(timeout=3600) != 0:
            raise RuntimeError("a racing runner failed")
    results = [json.loads(f.read_text()) for f in files]
    wall = max(r["ended"] for r in results) - start_at
    return wall, sum(r["sent"] for r in results), sum(r["skipped"] for r in results)


def check_once(expected: int) -> tuple[bool, str]:
    from django.db.models import Count

    from crm.models import StepSend
    from inboxes.models import OutboxItem

    sends = StepSend.objects.count()
    doubled = (
        StepSend.objects.values("enrollment_id", "position")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
        .count()
    )
    items = OutboxItem.objects.count()
    recipients = OutboxItem.objects.values_list("recipients", flat=True)
    distinct = len({tuple(r) for r in recipients})
    ok = sends == items == distinct == expected and doubled == 0
    return ok, (
        f"{sends} StepSend rows, {items} outbox items, {distinct} distinct recipients; "
        f"{expected} expected; {doubled} step(s) twice"
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    harness.snapshot_and_reexec(SCRIPT, argv)
    args = parse_args(argv)
    if args.child == "runner":
        child_runner(args)
        return 0

    work = harness.make_workdir(args.db, mail=False)
    figures: dict = {"steps": args.steps, "chunk": args.chunk, "runners": args.runners}
    try:
        harness.create_database(args.db)
        harness.django_setup()
        harness.migrate()
        figures["machine"] = harness.machine()
        account, owner, mailbox, sequence = make_world(args.steps)
        enrol_due(account, owner, sequence, 0, args.steps)
        figures["load_start"] = harness.loadavg()
        harness.log(f"{args.steps} enrolments due; load average {figures['load_start']:.2f}")

        base_seconds = baseline(mailbox, args.steps, args.chunk)
        base_rate = args.steps / base_seconds
        print(
            f"baseline: outbox_create of {args.steps} emails in {base_seconds:.2f} s = "
            f"{base_rate:.0f}/s (transactions of {args.chunk})"
        )

        seconds, run = step_run(args.chunk, args.profile, phases=True)
        rate = run["sent"] / seconds
        ratio = rate / base_rate
        print(
            f"step run: {run['sent']} steps into the outbox in {seconds:.2f} s = {rate:.0f} "
            f"steps/s ({1000 * seconds / max(run['sent'], 1):.2f} ms per step); "
            f"ratio to the baseline {ratio:.2f}"
        )
        ok, detail = check_once(args.steps)
        print(f"  once each: {'yes' if ok else 'NO'} ({detail})")
        figures.update(
            baseline_seconds=base_seconds,
            baseline_rate=base_rate,
            run_seconds=seconds,
            run_rate=rate,
            ratio=ratio,
            once=ok,
        )

        race_rate = None
        if args.runners > 1:
            from django.db import connections

            enrol_due(account, owner, sequence, args.steps, args.steps)
            connections.close_all()
            wall, sent, skipped = racing_runs(work, args.runners, args.chunk)
            race_rate = sent / wall
            race_ok, race_detail = check_once(2 * args.steps)
            print(
                f"{args.runners} racing runners: {sent} steps in {wall:.2f} s = {race_rate:.0f} "
                f"steps/s together ({skipped} skipped as taken by the other)"
            )
            print(f"  once each: {'yes' if race_ok else 'NO'} ({race_detail})")
            figures.update(race_seconds=wall, race_rate=race_rate, race_once=race_ok)
            ok = ok and race_ok

        figures["load_end"] = harness.loadavg()
        print(
            f"load average at start {figures['load_start']:.2f}, end {figures['load_end']:.2f}"
            + ("  [machine busy: figures skewed]" if figures["load_end"] > 1.5 else "")
        )
        met = rate >= TARGET and ok
        print("targets:")
        print(
            f"  [{'met' if met else 'NOT met'}] {args.steps} due steps reach the outbox at "
            f">= {TARGET} steps/s, none twice: {rate:.0f} steps/s"
            + (f" ({race_rate:.0f} with {args.runners} racing runners)" if race_rate else "")
        )
        if args.json:
            harness.write_result(args.json, figures)
            print(f"figures written to {args.json}")
        return 0 if ok else 1
    finally:
        harness.cleanup(work, keep=args.keep, snapshot=args.in_snapshot)


if __name__ == "__main__":
    sys.exit(main())
