"""Insert benchmark: storing the rows of parsed messages, bulk_create against COPY.

    .venv/bin/python bench/insert.py [--messages 100] [--rounds 20] [--db NAME]

Parses ``--messages`` messages of the sync benchmark's corpus (bench/corpus.py) once,
then inserts their ``Message`` rows (as ``inboxes.sync.ingest.message_row`` builds them)
``--rounds`` times each way, in one process and one database, each round in its own
transaction and under fresh dedupe keys:

1. ``Message.objects.bulk_create`` with the bodies compressed with pglz (PostgreSQL's
   default, and this project's before migration ``conversations/0007``);
2. the same with LZ4 (the columns as that migration sets them);
3. ``core.bulk.bulk_insert`` (COPY in binary format), with LZ4: what ingestion does.

Prints the median wall time of each, the CPU its PostgreSQL backend spent (read from
/proc; the server runs on this machine), and the ratios against the first. Needs
PostgreSQL on 127.0.0.1:5432 (trust auth, user postgres); the database
(``postkamer_bench_insert``) is created and dropped.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import corpus, harness  # noqa: E402

harness.use_project_root()

LONG_COLUMNS = ("text", "html", "headers", "subject", "references", "to", "cc")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--db", default="postkamer_bench_insert")
    args = parser.parse_args()

    work = harness.make_workdir(args.db)
    harness.create_database(args.db)
    try:
        harness.django_setup()
        harness.migrate()
        return run(args)
    finally:
        harness.cleanup(work)  # closes the connections, drops the database


def run(args) -> int:
    from django.db import connection, transaction

    from accounts.models import Account
    from core.bulk import bulk_insert
    from inboxes.mime import parse_message
    from inboxes.models import Message
    from inboxes.sync.ingest import message_row

    account = Account.objects.create(name="Insert bench")
    raws = [corpus.message(i) for i in range(10_000, 10_000 + args.messages)]
    parsed = [parse_message(raw) for raw in raws]
    backend = harness.backend_pid()

    def compression(method: str) -> None:
        with connection.cursor() as cursor:
            for column in LONG_COLUMNS:
                cursor.execute(
                    f'ALTER TABLE conversations_message ALTER COLUMN "{column}" '
                    f"SET COMPRESSION {method}"
                )

    def measure(label: str, insert) -> tuple[float, float]:
        walls, cpus = [], []
        for number in range(args.rounds):
            rows = [
                message_row(account_id=account.pk, parsed=p, raw_size=len(raw))
                for p, raw in zip(parsed, raws, strict=True)
            ]
            for row in rows:
                row.dedupe_key = f"{label[:8]}-{number}-{row.dedupe_key}"[:64]
            cpu, started = harness.cpu_seconds(backend), time.perf_counter()
            with transaction.atomic():
                insert(rows)
            walls.append(time.perf_counter() - started)
            cpus.append(harness.cpu_seconds(backend) - cpu)
        stored = Message.objects.filter(dedupe_key__startswith=f"{label[:8]}-").count()
        assert stored == args.rounds * len(raws), (label, stored)
        return statistics.median(walls), statistics.mean(cpus)

    def bulk_create(rows):
        Message.objects.bulk_create(rows, ignore_conflicts=True)

    def copy(rows):
        bulk_insert(Message, rows, ignore_conflicts=True)

    compression("pglz")
    results = {"bulk_create, pglz": measure("pglz-bc", bulk_create)}
    compression("lz4")
    results["bulk_create, lz4"] = measure("lz4-bc", bulk_create)
    results["COPY, lz4"] = measure("lz4-copy", copy)

    size = sum(len(raw) for raw in raws) / len(raws) / 1024
    print(
        f"{len(raws)} corpus messages per insert (mean {size:.1f} KiB raw), "
        f"median of {args.rounds} rounds; PostgreSQL {connection.pg_version // 10000}"
    )
    first_wall, first_cpu = results["bulk_create, pglz"]
    for label, (wall, cpu) in results.items():
        print(
            f"  {label:18s} {wall * 1000:6.1f} ms (ratio {wall / first_wall:.2f}), "
            f"PostgreSQL CPU {cpu * 1000:5.1f} ms (ratio {cpu / first_cpu:.2f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
