"""Inbox benchmark: the conversation list and opening a conversation at scale.

    .venv/bin/python bench/inbox.py                        # 100,000 conversations, 1,000,000 messages
    .venv/bin/python bench/inbox.py --reuse                # measure again without reloading
    .venv/bin/python bench/inbox.py --conversations 10000  # a quicker run (100,000 messages)
    .venv/bin/python bench/inbox.py --drop                 # remove the benchmark database

Loads a deterministic (seeded) account into PostgreSQL database
``postkamer_inbox_bench``: 3 inboxes (one restricted to a team), 20 agents and an
admin, N conversations with 10 messages each on average (lognormal, some with
50+, at least 20 with exactly 50), message text of 1-3 KB (40% also with HTML),
sent over two years, ~70% closed, assignees spread unevenly, read states,
assignment/close events, notes and attachment rows. Loading uses COPY on two
connections with the FK triggers off (``session_replication_role = replica``,
the generator builds every reference itself; checked afterwards), secondary
indexes dropped during the load and rebuilt, then VACUUM ANALYZE.

Then it measures, in process, with Django's test client (an agent with a token
for the API, a session for the pages), after a warm-up, N requests per case:

* ``GET /api/v1/conversations/`` first page, a page ~50 cursors deep, filters
  (inbox, status=open, assignee, unassigned) and search (API and list fragment: a
  common word, its start, two words, a mail domain, a customer's name and address,
  an order number in one message, a word in none; bench/inbox_measure.py search_terms);
* the inbox page and its list fragment with the views unassigned, mine, open,
  closed and per inbox, if the page exists (``/inbox/``, found by walking the
  URLconf); otherwise the selector behind it (``conversation_list(view=...)``)
  is measured and the report says so; the page's deep page (the 10th "Show more":
  the 50 rows after a keyset cursor, appended by htmx) and the 3-second poll, also
  with 9 pages appended below the first;
* opening a conversation of exactly 50 messages (API and page).

It prints p50/p95/mean per case, SQL queries per request, the targets (list
p95 < 100 ms, conversation p95 < 150 ms, search p95 < 150 ms) and EXPLAIN ANALYZE of the slowest
list, search and conversation queries. ``--json PATH`` keeps everything;
``--profile`` adds a cProfile of the slowest cases. Figures: bench/README.md.

The measured code is a snapshot of the tree taken at start (others edit it
meanwhile); ``--no-snapshot`` measures the live tree.

The loader is bench/inbox_load.py (the planned data in inbox_data.py, COPY in
inbox_copy.py), the measurements bench/inbox_measure.py and inbox_experiments.py.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import harness  # noqa: E402

harness.use_project_root()

from bench.harness import log  # noqa: E402
from bench.inbox_copy import read_meta  # noqa: E402
from bench.inbox_experiments import candidate_indexes  # noqa: E402
from bench.inbox_load import LOAD_VERSION, load  # noqa: E402
from bench.inbox_measure import (  # noqa: E402
    DETAIL_TARGET_MS,
    LIST_TARGET_MS,
    SEARCH_TARGET_MS,
    measure,
)

SCRIPT = Path(__file__).resolve()
DEFAULT_DB = "postkamer_inbox_bench"
# PostgreSQL settings the report states beside the machine.
PG_SETTINGS = ("server_version", "shared_buffers", "work_mem", "effective_cache_size")


def print_report(meta: dict, results: dict, machine_info: dict) -> None:
    rows = meta["rows"]
    print()
    print(
        f"data: {rows['conversations']:,} conversations, {rows['messages']:,} messages "
        f"({meta['text_mib']:,} MiB text+html), {rows['read_states']:,} read states, "
        f"{rows['events']:,} events; database {meta['database_size']}; "
        f"loaded in {meta['load_seconds']:.0f} s on {meta['loaded_at']}"
    )
    print(
        f"machine: {machine_info.get('cpu')}, {machine_info.get('cores')} cores, "
        f"{machine_info.get('memory_mib')} MiB, PostgreSQL {machine_info.get('pg_server_version')} "
        f"(shared_buffers {machine_info.get('pg_shared_buffers')})"
    )
    print()
    columns = ["case", "n", "p50 ms", "p95 ms", "mean ms", "py CPU p50", "queries", "SQL ms"]
    columns += ["load avg", "target"]
    lines = []
    for s in results["cases"]:
        if s["target_ms"] is None:
            verdict = "-"
        else:
            verdict = ("met" if s["met"] else "NOT MET") + f" (<{s['target_ms']:.0f})"
        lines.append(
            [
                s["name"],
                str(s["n"]),
                f"{s['p50_ms']:.1f}",
                f"{s['p95_ms']:.1f}",
                f"{s['mean_ms']:.1f}",
                f"{s['cpu_p50_ms']:.1f}" if s["cpu_p50_ms"] is not None else "",
                str(s["queries"]),
                f"{s['sql_ms']:.1f}",
                "→".join(f"{x:.1f}" for x in s["load_avg"]),
                verdict,
            ]
        )
    widths = [max(len(c), *(len(line[i]) for line in lines)) for i, c in enumerate(columns)]

    def row(cells):
        return (
            "| "
            + " | ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
            )
            + " |"
        )

    print(row(columns))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for line in lines:
        print(row(line))
    print(
        "(p50/p95/mean: wall time per request in this process, test client to response; "
        "py CPU: this process's CPU per request; queries and SQL ms: one captured request; "
        "load avg: the machine's 1-minute load before→after the case)"
    )
    print()
    for note in results["page_notes"]:
        print(f"page: {note}")
    lists = [s for s in results["cases"] if s["group"] in ("api-list", "page-list", "selector")]
    details = [s for s in results["cases"] if s["group"] in ("api-detail", "page-detail")]
    searches = [s for s in results["cases"] if s["group"] == "search"]
    for label, group, target in (
        ("list", lists, LIST_TARGET_MS),
        ("conversation", details, DETAIL_TARGET_MS),
        ("search", searches, SEARCH_TARGET_MS),
    ):
        if not group:
            continue
        worst = max(group, key=lambda s: s["p95_ms"])
        ok = all(s["met"] for s in group)
        print(
            f"target {label} p95 < {target:.0f} ms: {'MET' if ok else 'NOT MET'} "
            f"(worst: {worst['name']}, p95 {worst['p95_ms']:.1f} ms)"
        )
    for group, info in results["explain"].items():
        print(
            f"\n--- EXPLAIN ANALYZE, slowest query of the slowest {group} case ({info['case']}, "
            f"{info['query_ms']} ms in the captured request) ---"
        )
        print(info["sql"])
        print(info["plan"])


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", type=int, default=100_000)
    parser.add_argument("--messages", type=int, default=None, help="default: 10 per conversation")
    parser.add_argument("--db", default=DEFAULT_DB)
    parser.add_argument(
        "--reuse", action="store_true", help="keep a loaded database of the same size"
    )
    parser.add_argument("--drop", action="store_true", help="drop the benchmark database and exit")
    parser.add_argument("--load-only", action="store_true")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--search-requests", type=int, default=50)
    parser.add_argument("--no-search", action="store_true", help="skip the search cases")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--deep-pages", type=int, default=50)
    parser.add_argument("--conn-max-age", type=int, default=600, help="DATABASE_CONN_MAX_AGE")
    parser.add_argument(
        "--page", action="append", help="NAME=URL instead of the routes found; {inbox}, {cid}"
    )
    parser.add_argument(
        "--only", action="append", help="measure the cases whose name contains this"
    )
    parser.add_argument(
        "--wait-idle", type=float, default=0, help="wait until the 1-minute load average < this"
    )
    parser.add_argument("--wait-max", type=float, default=1800, help="seconds, for --wait-idle")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--experiments",
        action="store_true",
        help="also time the list queries with candidate indexes (rolled back) and jit off",
    )
    parser.add_argument(
        "--candidate-indexes",
        action="store_true",
        help="measure with the proposed indexes created (and dropped afterwards)",
    )
    parser.add_argument("--json", help="write all results to this file")
    parser.add_argument("--no-snapshot", action="store_true")
    parser.add_argument("--in-snapshot", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.candidate_indexes and args.experiments:
        parser.error("--experiments creates the candidate indexes itself; use one or the other")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.drop:
        harness.drop_database(args.db)
        log(f"dropped {args.db}")
        return 0
    harness.snapshot_and_reexec(SCRIPT, argv)
    if args.json:
        args.json = str(Path(args.json).resolve())
    # Celery (config/celery.py) puts the working directory first on sys.path: make
    # that the tree being measured.
    os.chdir(harness.ROOT)
    atexit.register(harness.remove_snapshot, args.in_snapshot)
    work = harness.make_workdir(args.db, mail=False)  # the database is kept (--reuse)
    atexit.register(shutil.rmtree, work.root, True)
    os.environ["DATABASE_CONN_MAX_AGE"] = str(args.conn_max_age)
    harness.django_setup()
    import conversations

    log(f"code: measuring {Path(conversations.__file__).parent.parent}")
    from django.core.management import call_command
    from django.db import connection

    total = args.messages or args.conversations * 10
    meta = read_meta(args.db) if args.reuse else None
    if meta and (
        meta.get("version") != LOAD_VERSION
        or meta.get("conversations") != args.conversations
        or meta.get("messages_requested") != total
        or not meta.get("complete")
    ):
        log(
            f"--reuse: {args.db} holds another load ({meta.get('conversations')} conversations); reloading"
        )
        meta = None
    if meta:
        log(
            f"--reuse: {args.db} already holds {meta['rows']['conversations']:,} conversations "
            f"(loaded {meta['loaded_at']} in {meta['load_seconds']:.0f} s)"
        )
        call_command("migrate", interactive=False, verbosity=0)  # new migrations since, if any
    else:
        meta = load(args.db, args.conversations, total)
    if args.load_only:
        return 0
    info = harness.machine(PG_SETTINGS)
    connection.close()
    if args.wait_idle:
        # Others share this machine (test suites, browsers): wait for a quieter moment.
        if harness.loadavg() >= args.wait_idle:
            log(f"waiting for the 1-minute load average to drop below {args.wait_idle}")
        harness.wait_quiet(args.wait_max, args.wait_idle)
        log(f"load average now {harness.loadavg():.1f}")
    info["load_avg_at_start"] = [round(x, 2) for x in os.getloadavg()]
    if args.candidate_indexes:
        candidate_indexes(create=True)
    try:
        results = measure(meta, args)
    finally:
        if args.candidate_indexes:
            candidate_indexes(create=False)
    print_report(meta, results, info)
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"machine": info, "load": meta, "args": vars(args), **results},
                indent=2,
                default=str,
            )
        )
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
