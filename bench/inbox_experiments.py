"""What the inbox benchmark can try beside its measurements: the proposed list
indexes (``--candidate-indexes``; ``--experiments`` times each list query with them
inside a transaction that is rolled back, and search with jit off) and cProfile of
the slowest cases (``--profile``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench.harness import log

if TYPE_CHECKING:
    from bench.inbox_measure import Case


# Candidate indexes for the proposed patches, tried inside a transaction that is
# rolled back (the database is left as loaded).
CANDIDATE_INDEXES = [
    "CREATE INDEX conv_account_recent ON conversations_conversation "
    "(account_id, last_message_at DESC, id DESC)",
    "CREATE INDEX conv_inbox_recent ON conversations_conversation "
    "(inbox_id, last_message_at DESC, id DESC)",
    "CREATE INDEX conv_assignee_any_recent ON conversations_conversation "
    "(assignee_id, last_message_at DESC, id DESC)",
    "CREATE INDEX conv_unassigned_recent ON conversations_conversation "
    "(account_id, last_message_at DESC, id DESC) WHERE assignee_id IS NULL",
]


def candidate_indexes(*, create: bool) -> None:
    """--candidate-indexes: measure with the proposed indexes in place (dropped after)."""
    from django.db import connection

    with connection.cursor() as cursor:
        for ddl in CANDIDATE_INDEXES:
            name = ddl.split()[2]
            if create:
                cursor.execute(ddl.replace("CREATE INDEX", "CREATE INDEX IF NOT EXISTS", 1))
            else:
                cursor.execute(f"DROP INDEX IF EXISTS {name}")
        if create:
            cursor.execute("ANALYZE conversations_conversation")
    log(("created" if create else "dropped") + f" the {len(CANDIDATE_INDEXES)} candidate indexes")


def execution_ms(cursor, sql: str, runs: int = 5) -> tuple[float, str]:
    """The best of ``runs`` EXPLAIN ANALYZE execution times, and the plan's top scan."""
    import re

    best, scan = float("inf"), ""
    for _ in range(runs):
        cursor.execute("EXPLAIN (ANALYZE, TIMING OFF) " + sql)
        lines = [row[0] for row in cursor.fetchall()]
        for line in lines:
            match = re.search(r"Execution Time: ([0-9.]+) ms", line)
            if match:
                best = min(best, float(match.group(1)))
        scans = [
            line.strip().removeprefix("->  ").split("  (")[0]
            for line in lines
            if "conversations_conversation " in line and "Scan" in line
        ]
        scan = scans[0] if scans else ""
    return best, scan


def experiments(cases: list[Case]) -> list[dict]:
    """Each list query (any SELECT over 2 ms in the captured request) as it is, with
    the candidate indexes, and search queries with jit off."""
    from django.db import connection, transaction

    chosen: dict[str, str] = {}
    for case in cases:
        if case.group not in ("api-list", "page-list", "search"):
            continue
        for _ms, sql in case.queries:
            # The list and count queries over conversations (not the pk lookups).
            if not sql.lstrip().upper().startswith("SELECT") or sql in chosen.values():
                continue
            if 'FROM "conversations_conversation"' not in sql:
                continue
            if "COUNT(" in sql:
                kind = "counts per inbox" if "GROUP BY" in sql else "counts per view"
            elif "ORDER BY" in sql and "LIMIT" in sql:
                kind = "list"
            else:
                continue
            chosen[f"{case.name} [{kind}]"] = sql
    results = {label: {"label": label} for label in chosen}
    log(f"experiments: {len(chosen)} queries, 5 runs each, best execution time")
    with connection.cursor() as cursor:
        for label, sql in chosen.items():
            if "search" in label or "?q=" in label:
                continue
            results[label]["before_ms"], results[label]["before_scan"] = execution_ms(cursor, sql)
        with transaction.atomic():
            for ddl in CANDIDATE_INDEXES:
                cursor.execute(ddl)
            cursor.execute("ANALYZE conversations_conversation")
            for label, sql in chosen.items():
                if "search" in label or "?q=" in label:
                    continue
                results[label]["indexes_ms"], results[label]["indexes_scan"] = execution_ms(
                    cursor, sql
                )
            transaction.set_rollback(True)
        for label, sql in chosen.items():
            if not ("search" in label or "?q=" in label):
                continue
            results[label]["before_ms"], _ = execution_ms(cursor, sql, runs=1)
            with transaction.atomic():
                cursor.execute("SET LOCAL jit = off")
                results[label]["jit_off_ms"], _ = execution_ms(cursor, sql, runs=1)
                transaction.set_rollback(True)
    out = list(results.values())
    for row in out:
        log(
            f"  {row['label'][:60]:<60} {row.get('before_ms', 0):8.1f} ms -> "
            f"indexes {row.get('indexes_ms', float('nan')):8.1f} ms, "
            f"jit off {row.get('jit_off_ms', float('nan')):8.1f} ms   {row.get('indexes_scan', '')}"
        )
    return out


def run_profiles(cases: list[Case], args) -> dict:
    import cProfile
    import io
    import pstats

    chosen = []
    for group in ("api-list", "page-list", "selector", "api-detail", "page-detail"):
        members = [c for c in cases if c.group == group]
        if members:
            chosen.append(max(members, key=lambda c: c.summary()["p95_ms"]))
    out = {}
    for case in chosen:
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(50):
            case.run()
        profiler.disable()
        buffer = io.StringIO()
        stats = pstats.Stats(profiler, stream=buffer)
        stats.sort_stats("cumulative").print_stats(30)
        stats.sort_stats("tottime").print_stats(15)
        # The product's own functions and the HTML helpers they call.
        stats.sort_stats("cumulative").print_stats(
            r"(conversations|accounts|inboxes|core)/[a-z_]+\.py|utils/html\.py|html/parser", 30
        )
        out[case.name] = buffer.getvalue()
        print(f"\n=== cProfile: {case.name} (50 requests) ===")
        print(buffer.getvalue())
    return out
