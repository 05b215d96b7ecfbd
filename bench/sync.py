"""Sync benchmark: a bare IMAP fetch+parse loop against a full Postkamer sync.

    .venv/bin/python bench/sync.py [N] [--quick] [--profile] [--json PATH] [--keep]

N messages (default 10,000; --quick: 2,000) of the deterministic corpus in
bench/corpus.py are written straight into a local Dovecot's Maildir. Then, each
in a fresh interpreter so that peak memory is that process's own:

1. baseline: imapclient logs in over TLS, UID SEARCH ALL, ``UID FETCH
   BODY.PEEK[]`` in batches of 200, and ``email.message_from_bytes(raw,
   policy=email.policy.default)`` for every message;
2. sync: ``inboxes.sync.mailbox_sync`` of the team mailbox (backfill_days=None)
   into PostgreSQL, through the real services (fetch, parse, raw MIME and
   attachments to storage, ingest, threading into conversations);
3. the baseline again (the faster of the two is the one the ratio uses);
4. 100 new messages: delivered into Maildir new/ and synced, in rounds
   (--new-rounds, default 5; the median is the figure); then 100 more
   while the IDLE watcher (``inboxes.sync.watch.watch_mailbox``, calling
   ``mailbox_sync`` as its on_change) runs, timed from delivery until all are
   in the inbox.

--profile runs the sync under cProfile and prints the hot spots.

--provider gmail|microsoft runs the same against the fake Google or Microsoft
of tests/support/fakes (in a process of their own, loaded with the same N messages):
the team mailbox is connected with OAuth through the product's sign-in code, the
baseline is a bare loop with the client library the product uses
(google-api-python-client: messages.list + batched messages.get format=raw;
requests: a delta round + GET $value, 4 in flight), and "100 new" is one sync
through Gmail's history / Graph's deltaLink (no push: the fakes have none).
See bench/README.md for the figures.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import harness  # noqa: E402

harness.use_project_root()

from bench import sync_baseline, sync_fakes, sync_full, sync_incremental, sync_run  # noqa: E402

SCRIPT = Path(__file__).resolve()


def main() -> int:
    harness.snapshot_and_reexec(SCRIPT, sys.argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("n", nargs="?", type=int, default=10_000, help="messages (10,000)")
    parser.add_argument("--quick", action="store_true", help="2,000 messages")
    parser.add_argument("--profile", action="store_true", help="cProfile the sync")
    parser.add_argument("--profile-out", help="keep the cProfile stats in this file")
    parser.add_argument("--no-idle", action="store_true", help="skip the IDLE latency test")
    parser.add_argument("--no-phases", action="store_true", help="no phase timers in the sync")
    parser.add_argument("--json", help="also write every figure to this JSON file")
    parser.add_argument("--db", default=harness.DEFAULT_DB, help="database name (dropped!)")
    parser.add_argument("--keep", action="store_true", help="keep the database and files")
    parser.add_argument(
        "--no-snapshot", action="store_true", help="run the working tree, not a copy of it"
    )
    parser.add_argument("--in-snapshot", help=argparse.SUPPRESS)
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0,
        metavar="SECONDS",
        help="wait up to this long for a load average < 0.5 before measuring",
    )
    parser.add_argument(
        "--patch",
        action="append",
        help="a Python file run in the sync processes first, to try a proposed change "
        "(e.g. bench/timeline.py); may be given more than once",
    )
    parser.add_argument(
        "--provider",
        choices=("imap", "gmail", "microsoft"),
        default="imap",
        help="imap: Dovecot (default); gmail, microsoft: the fake Google / Microsoft "
        "servers of tests/support/fakes, in a process of their own",
    )
    parser.add_argument(
        "--fake-gzip-level",
        type=int,
        default=1,
        help="gzip level of the fake Google's answers (1; the fake's own default is 9)",
    )
    parser.add_argument(
        "--profile-fake", action="store_true", help="cProfile the fake server's threads"
    )
    parser.add_argument(
        "--baseline-only",
        action="store_true",
        help="gmail/microsoft: only the bare loop, twice (to see whether the fake keeps up)",
    )
    # children
    for name in (
        "--child",
        "--token",
        "--address",
        "--fake-control",
        "--result-file",
        "--host",
        "--password",
        "--mailbox",
        "--inbox",
        "--maildir",
    ):
        parser.add_argument(name, help=argparse.SUPPRESS)
    for name in ("--fake-n", "--page-size", "--batch-size", "--port", "--uid", "--gid", "--start"):
        parser.add_argument(name, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--idle", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--new-rounds",
        type=int,
        default=5,
        help="rounds of 100 new messages + one sync (IMAP; the median is reported)",
    )
    parser.add_argument("--profile-file", help=argparse.SUPPRESS)
    parser.add_argument("--idle-timeout", type=float, default=25.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.phases = not args.no_phases

    if args.child == "fake":
        sync_fakes.child_fake(args)
        sys.stdout.flush()
        os._exit(0)
    if args.child:
        child = {
            "baseline": sync_baseline.child_baseline,
            "baseline-gmail": sync_baseline.child_baseline_gmail,
            "baseline-microsoft": sync_baseline.child_baseline_microsoft,
            "sync": sync_full.child_sync,
            "incremental": sync_incremental.child_incremental,
            "incremental-oauth": sync_incremental.child_incremental_oauth,
        }[args.child]
        if args.child.startswith("baseline-") and args.profile_file:
            import cProfile

            profiler = cProfile.Profile()
            result = profiler.runcall(child, args)
            profiler.dump_stats(args.profile_file)
            sync_full.print_profile(args.profile_file, 25, what=f"the {args.child} loop")
            harness.write_result(args.result_file, result)
            sys.stdout.flush()
            os._exit(0)
        harness.write_result(args.result_file, child(args))
        sys.stdout.flush()
        os._exit(0)  # don't wait for the IDLE thread (blocked in IDLE for up to 20 s)

    n = 2_000 if args.quick else args.n
    for name in ("json", "profile_out"):
        if getattr(args, name):
            setattr(args, name, os.path.abspath(getattr(args, name)))
    args.patch = [os.path.abspath(p) for p in args.patch or []]
    if args.patch:
        print("patches: " + ", ".join(args.patch))
    if args.provider != "imap":
        return sync_run.run_oauth(n, args)
    return sync_run.run(n, args)


if __name__ == "__main__":
    sys.exit(main())
