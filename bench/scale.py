"""Scale benchmark: N mailboxes watched by the product on one machine, mail arriving
at a steady rate, how soon each message is visible, and a watcher killed mid-run.

    .venv/bin/python bench/scale.py [N] [--minutes 5] [--rate 10] [--quick] [--json PATH]

N (default 1,000; --quick: 100 and 1 minute) Dovecot users, each a team mailbox
with its own inbox in PostgreSQL (made in bulk, secrets encrypted as the product
stores them, then synced once by the workers so the run starts from steady state).
Then the product's processes as the README's process table runs them:
``--watchers`` (2) ``manage.py watch_mailboxes`` (plus ``--watcher-args``),
``--workers`` (1) Celery workers on default,sync,send with a Redis broker, and beat.
Once every mailbox is watched (by the watch leases, pushed_until, or else
Dovecot's sessions) messages are delivered into random mailboxes' Maildirs at
--rate per second for --minutes; a poll of PostgreSQL sees each one's row appear
(arrival -> visible). At --kill-at (40%) of the run one watcher gets kill -9:
the time until its mailboxes are watched again, and whether mail that came
meanwhile was missed. See bench/README.md for the figures and targets.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import harness  # noqa: E402

harness.use_project_root()

from bench import scale_probe as probe  # noqa: E402
from bench import scale_report, scale_setup  # noqa: E402

SCRIPT = Path(__file__).resolve()
DEFAULT_DB = "postkamer_bench_scale"


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("n", nargs="?", type=int, help="mailboxes (1,000; --quick: 100)")
    parser.add_argument("--quick", action="store_true", help="100 mailboxes, 1 minute")
    parser.add_argument("--minutes", type=float, help="how long mail arrives (5)")
    parser.add_argument("--rate", type=float, default=10, help="messages per second (10)")
    parser.add_argument("--watchers", type=int, default=2, help="watcher processes (2)")
    parser.add_argument("--watcher-args", default="", help="extra watch_mailboxes flags")
    parser.add_argument("--workers", type=int, default=1, help="Celery workers (1)")
    parser.add_argument("--concurrency", type=int, default=2, help="per worker (2)")
    parser.add_argument("--no-beat", action="store_true", help="run without celery beat")
    parser.add_argument("--kill-at", type=float, default=0.4, help="kill -9 a watcher (0: no)")
    parser.add_argument("--lda", action="store_true", help="deliver with dovecot-lda")
    parser.add_argument("--warmup-max", type=float, help="most seconds to wait for watching")
    parser.add_argument("--drain", type=float, default=60, help="seconds after the end (60)")
    parser.add_argument(
        "--late-wait",
        type=float,
        default=120,
        help="then how long to wait for what was lost, to tell late from missed (120)",
    )
    parser.add_argument("--sample", type=float, default=2, help="seconds between readings")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for processes")
    parser.add_argument(
        "--max-db-connections",
        type=int,
        default=70,
        help="stop when the run's processes hold more PostgreSQL connections (70)",
    )
    parser.add_argument(
        "--private-pg",
        action="store_true",
        help="a PostgreSQL of the run's own (max_connections 2N + 200) instead of the shared one",
    )
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--db", default=DEFAULT_DB)
    parser.add_argument("--json", help="also write every figure to this JSON file")
    parser.add_argument("--keep", action="store_true", help="keep the database and temp dir")
    parser.add_argument("--no-snapshot", action="store_true", help="run the live tree")
    parser.add_argument("--code", help="measure this commit (e.g. a branch) instead")
    parser.add_argument("--code-dir", help="measure a copy of this working tree instead")
    parser.add_argument("--in-snapshot", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.n = args.n or (100 if args.quick else 1000)
    args.minutes = args.minutes or (1.0 if args.quick else 5.0)
    args.warmup_max = args.warmup_max or max(120.0, args.n * 0.6)
    return args


BENCH_FILES = (
    "__init__.py",
    "harness.py",
    "scale.py",
    "scale_probe.py",
    "scale_report.py",
    "scale_setup.py",
)


def snapshot_other_code(argv: list[str]) -> None:
    """--code REV / --code-dir DIR: measure another version of the product (a commit,
    e.g. a branch not merged yet, or a working tree, copied, never touched) with
    this tree's benchmark files laid over it; then run from that copy."""
    import shutil
    import tempfile

    known = {a.split("=")[0] for a in argv}
    rev = argv[argv.index("--code") + 1] if "--code" in known else None
    directory = argv[argv.index("--code-dir") + 1] if "--code-dir" in known else None
    if not (rev or directory) or {"--in-snapshot", "-h", "--help"} & set(argv):
        return
    snap = Path(tempfile.mkdtemp(prefix=harness.SNAPSHOT_PREFIX))
    src = snap / "src"
    if rev:
        src.mkdir()
        archive = subprocess.run(
            ["git", "-C", str(harness.ROOT), "archive", rev], capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", str(src)], input=archive.stdout, check=True)
        described = subprocess.run(
            ["git", "-C", str(harness.ROOT), "log", "-1", "--format=%h %s", rev],
            capture_output=True,
            text=True,
        ).stdout.strip()
        os.environ["SCALE_CODE"] = f"{rev} = {described[:90]}"
    else:
        ignore = shutil.ignore_patterns(*harness.SNAPSHOT_IGNORE)
        shutil.copytree(directory, src, ignore=ignore)
        os.environ["SCALE_SOURCE_TREE"] = str(Path(directory).resolve())
    (src / "bench").mkdir(exist_ok=True)
    for name in BENCH_FILES:
        shutil.copy2(harness.ROOT / "bench" / name, src / "bench" / name)
    print(f"code: {rev or directory} copied to {src}, with this tree's bench/scale*.py")
    sys.stdout.flush()
    target = src / "bench" / "scale.py"
    os.execv(sys.executable, [sys.executable, str(target), *argv, "--in-snapshot", str(snap)])


def main() -> int:
    os.environ.setdefault("SCALE_SOURCE_TREE", str(harness.ROOT))
    snapshot_other_code(sys.argv[1:])
    harness.snapshot_and_reexec(SCRIPT, sys.argv[1:])
    args = parse(sys.argv[1:])
    os.environ["CELERY_BROKER_URL"] = scale_setup.broker_url()
    private_pg = None
    if args.private_pg:
        private_pg = scale_setup.PrivatePostgres(max_connections=args.n * 2 + 200)
        private_pg.start()
        args.max_db_connections = private_pg.max_connections - 20
        harness.log(f"PostgreSQL of this run's own on port {private_pg.port}")
    work = harness.make_workdir(args.db)
    harness.create_database(args.db)
    harness.django_setup()
    running: dict = {}
    try:
        result = run(args, work, running)
        scale_report.report(result)
        if args.json:
            harness.write_result(args.json, result)
        return 0 if result["verdict"]["all_met"] else 1
    finally:
        if "procs" in running:
            running["procs"].stop_all()
        harness.cleanup(work, running.get("dovecot"), keep=args.keep, snapshot=args.in_snapshot)
        if private_pg is not None and not args.keep:
            private_pg.stop()


def run(args: argparse.Namespace, work: harness.Workdir, running: dict) -> dict:
    result: dict = {"args": vars(args), "machine": harness.machine(("max_connections",))}
    result["code"] = code_version()
    result["inotify_max_user_instances"] = scale_setup.inotify_instances()
    harness.log(f"code: {result['code']}")
    harness.migrate()
    scale_setup.flush_broker()
    sessions = args.n * (args.watchers + 1) + 50 * args.workers * args.concurrency + 200
    dovecot = scale_setup.start_dovecot(work, sessions)
    running["dovecot"] = dovecot
    t = time.monotonic()
    passwords = scale_setup.add_users(dovecot, args.n)
    owners = scale_setup.create_mailboxes(dovecot, passwords)
    result["setup_seconds"] = round(time.monotonic() - t, 1)
    harness.log(f"{args.n} Dovecot users and team mailboxes in {result['setup_seconds']} s")

    env = dict(item.split("=", 1) for item in args.env)
    procs = scale_setup.Processes(work, env)
    running["procs"] = procs
    result["first_sync"] = scale_setup.mark_synced(list(owners))
    harness.log(f"synced once: {result['first_sync']}")
    workers = [procs.worker(i, args.concurrency) for i in range(args.workers)]
    beat = None if args.no_beat else procs.beat()
    result["watcher_base_rss_kib"] = watcher_base_rss(procs)

    extra = shlex.split(args.watcher_args)
    watchers = [procs.watcher(i, extra) for i in range(args.watchers)]
    warm = warm_up(args, dovecot, watchers)
    result["warmup"] = warm
    for proc in [*workers, *watchers, *([beat] if beat else [])]:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited:\n{proc.tail()}")

    sampler = Sampler(args, dovecot, watchers, warm["mode"])
    sampler.start()
    cpu_before = cpu_readings(dovecot, watchers, workers, beat)
    poll = probe.VisibilityPoll(args.db)
    poll.start()
    deliverer = probe.Deliverer(
        dovecot,
        [(mailbox_id, user) for mailbox_id, user in owners.items()],
        rate=args.rate,
        seconds=args.minutes * 60,
        run_id=uuid.uuid4().hex[:8],
        domain=scale_setup.ADDRESS_DOMAIN,
        seed=args.seed,
        lda=args.lda,
        on_delivered=poll.add,
    )
    harness.log(f"delivering {args.rate:g}/s for {args.minutes:g} min (load {harness.loadavg()})")
    deliverer.start()
    kill = None
    kill_due = time.monotonic() + args.minutes * 60 * args.kill_at if args.kill_at else None
    while deliverer.is_alive():
        if kill_due and kill is None and time.monotonic() >= kill_due:
            kill = Kill(args, procs, watchers, warm["mode"])
            kill.start()
        deliverer.join(timeout=0.2)
    harness.log(
        f"delivered {len(deliverer.deliveries)}; waiting up to {args.drain:g} s for the rest"
    )
    deadline = time.monotonic() + args.drain
    while poll.waiting() and time.monotonic() < deadline:
        time.sleep(0.2)
    result["drain_left"] = poll.waiting()
    cpu_after = cpu_readings(dovecot, watchers, workers, beat)
    late_until = time.monotonic() + args.late_wait
    while poll.waiting() and time.monotonic() < late_until:
        time.sleep(0.5)
    result["never_visible"] = poll.waiting()  # also not in the --late-wait after the drain
    poll.stop.set()
    if kill is not None:
        kill.join(timeout=max(0.0, kill.deadline - time.monotonic()) + 1)
    sampler.stop.set()
    sampler.join(timeout=10)
    for proc in watchers:
        if kill is None or proc is not kill.victim:
            result.setdefault("watcher_alive_at_end", {})[proc.name] = proc.alive()
    return scale_report.figures(
        result, args, deliverer, poll, sampler.samples, kill, cpu_before, cpu_after
    )


def code_version() -> str:
    """The commit of the tree the snapshot was taken from, and whether it had changes."""
    if os.environ.get("SCALE_CODE"):
        return os.environ["SCALE_CODE"]
    source = os.environ.get("SCALE_SOURCE_TREE", str(harness.ROOT))

    def git(*argv: str) -> str:
        done = subprocess.run(
            ["git", "-C", source, *argv], capture_output=True, text=True, timeout=10
        )
        return done.stdout.strip()

    try:
        head = git("log", "-1", "--format=%h %s")[:90]
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except OSError:
        return "?"
    return f"{head}{' (+ uncommitted changes)' if dirty else ''} in {source}"


def watcher_base_rss(procs: scale_setup.Processes) -> int:
    """The RSS of a process with Django and the watcher command loaded, watching
    nothing: what every watcher costs before its first mailbox."""
    code = (
        "import os, inboxes.management.commands.watch_mailboxes;"
        "print(int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE') // 1024)"
    )
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=harness.ROOT,
        env=procs.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    try:
        return int(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return 0


# The warm-up's mode when the watchers hold leases (and IDLE is live on them).
LEASED = "lease + IDLE"


def watched_now(db: str, dovecot, args) -> tuple[str, int, dict]:
    """(how it was judged, mailboxes watched, details)."""
    owners = probe.watch_owners(db)
    if owners:
        # Held by a lease is not yet watched: the IDLE must be live too (pushed_until),
        # or the first minute measures the watchers' logins.
        return LEASED, min(sum(owners.values()), probe.pushed_count(db)), owners
    pushed = probe.pushed_count(db)
    if pushed:
        return "pushed_until", pushed, {}
    sessions = probe.dovecot_sessions(dovecot)
    return "dovecot sessions", len(sessions), {}


def warm_up(args, dovecot, watchers) -> dict:
    """Wait until every mailbox is watched and the workers' queue is empty."""
    started = time.monotonic()
    mode, watched, steady = "none", 0, 0
    most_connections = crowded = 0
    all_watched_after = None
    while time.monotonic() - started < args.warmup_max:
        time.sleep(2)
        for proc in watchers:
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited:\n{proc.tail()}")
        mode, watched, _ = watched_now(args.db, dovecot, args)
        queue = scale_setup.queue_length()
        connections = probe.db_connections(args.db)
        most_connections = max(most_connections, connections)
        crowded = crowded + 1 if connections > args.max_db_connections else 0
        if crowded >= 3:
            raise RuntimeError(
                f"{connections} PostgreSQL connections to {args.db} for 6 s (more than "
                f"--max-db-connections {args.max_db_connections}): stopped to leave the "
                "shared server's max_connections to others"
            )
        if watched >= args.n and all_watched_after is None:
            all_watched_after = round(time.monotonic() - started, 1)
        syncing = scale_setup.recently_synced(seconds=4)  # catch-ups run in the watcher too
        steady = steady + 1 if watched >= args.n and queue == 0 and not syncing else 0
        harness.log(
            f"warm-up: {watched}/{args.n} watched ({mode}), {queue} queued, {syncing} synced"
            " in the last 4 s, "
            f"{connections} database connections"
        )
        if steady >= 3:
            break
    return {
        "mode": mode,
        "watched": watched,
        "all_watched_after_s": all_watched_after,
        "seconds": round(time.monotonic() - started, 1),
        "complete": watched >= args.n,
        "db_connections_max": most_connections,
    }


def cpu_readings(dovecot, watchers, workers, beat) -> dict:
    tree = probe.parents()
    readings = {proc.name: probe.tree_cpu(proc.pid, tree) for proc in watchers + workers}
    if beat is not None:
        readings["beat"] = probe.tree_cpu(beat.pid, tree)
    readings["dovecot"] = probe.tree_cpu(dovecot.process.pid, tree)
    readings["bench"] = harness.cpu_seconds(os.getpid())
    postgres = {}
    for pid in tree:
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "postgres":
                postgres[pid] = harness.cpu_seconds(pid)
        except OSError:
            continue
    readings["_postgres"] = postgres
    busy, total = probe.machine_busy()
    readings["_machine_busy"], readings["_machine_total"] = busy, total
    readings["_at"] = time.time()
    return readings


class Sampler(threading.Thread):
    """Every --sample seconds: each watcher's RSS, threads and mailboxes held,
    Dovecot's processes and memory, the load, the queue."""

    def __init__(self, args, dovecot, watchers, mode: str) -> None:
        super().__init__(name="sampler", daemon=True)
        self.args, self.dovecot, self.watchers, self.mode = args, dovecot, watchers, mode
        self.samples: list[probe.Sample] = []
        self.stop = threading.Event()

    def run(self) -> None:
        count = 0
        while not self.stop.is_set():
            try:
                self.samples.append(self.reading(pss=count % 5 == 0))
            except Exception as exc:  # a reading missed is not a failed run
                harness.log(f"sampler: {exc}")
            count += 1
            self.stop.wait(self.args.sample)

    def reading(self, pss: bool) -> probe.Sample:
        tree = probe.parents()
        sample = probe.Sample(at=time.time(), load=harness.loadavg())
        owners = probe.watch_owners(self.args.db) if self.mode == LEASED else {}
        names = probe.owner_pids(self.args.db) if owners else {}
        for proc in self.watchers:
            if not proc.alive():
                continue
            if self.mode == LEASED:
                owner = probe.owner_of_pid(owners, names, proc.pid)
                held = owners.get(owner, 0) if owner else 0
            else:
                held = self.args.n  # without leases every watcher watches every mailbox
            sample.watchers[proc.name] = {
                "rss_kib": probe.rss_kib(proc.pid),
                "threads": probe.threads(proc.pid),
                "held": held,
            }
        sample.watched = sum(owners.values()) if owners else 0
        dovecot_pids = probe.descendants(self.dovecot.process.pid, tree)
        sample.dovecot_processes = len(dovecot_pids)
        sample.dovecot_rss_kib = sum(probe.rss_kib(p) for p in dovecot_pids)
        if pss:
            sample.dovecot_pss_kib = probe.pss_kib(dovecot_pids)
        sample.queue = scale_setup.queue_length()
        sample.db_connections = probe.db_connections(self.args.db)
        return sample


class Kill(threading.Thread):
    """kill -9 of the watcher holding the most mailboxes; then, with leases, the
    time until every one of its mailboxes is held by another watcher."""

    def __init__(self, args, procs, watchers, mode: str) -> None:
        super().__init__(name="kill", daemon=True)
        self.args, self.procs, self.mode = args, procs, mode
        self.victim = watchers[0]
        self.orphans: list[str] = []
        self.killed_at = 0.0
        self.taken_over_at: float | None = None
        self.deadline = time.monotonic() + 600
        self.progress: list[tuple[float, int]] = []
        if mode == LEASED:
            owners = probe.watch_owners(args.db)
            names = probe.owner_pids(args.db)
            best = max(
                watchers,
                key=lambda p: owners.get(probe.owner_of_pid(owners, names, p.pid) or "", 0),
            )
            self.victim = best
            self.owner = probe.owner_of_pid(owners, names, best.pid)
        else:
            self.owner = None

    def run(self) -> None:
        import psycopg

        url = harness.pg_url(self.args.db)
        with psycopg.connect(url, autocommit=True) as conn:
            if self.owner:
                self.orphans = [
                    str(row[0])
                    for row in conn.execute(
                        "SELECT id FROM inboxes_mailbox WHERE watch_owner = %s", [self.owner]
                    )
                ]
            self.procs.kill(self.victim)
            self.killed_at = time.time()
            harness.log(
                f"kill -9 {self.victim.name} (pid {self.victim.pid}), {len(self.orphans)} held"
            )
            if not self.orphans:
                return
            self.deadline = time.monotonic() + 300
            while time.monotonic() < self.deadline:
                held = conn.execute(
                    "SELECT count(*) FROM inboxes_mailbox WHERE id = ANY(%s::uuid[])"
                    " AND watch_owner <> '' AND watch_owner <> %s AND watch_lease_until > now()",
                    [self.orphans, self.owner],
                ).fetchone()[0]
                self.progress.append((round(time.time() - self.killed_at, 2), held))
                if held >= len(self.orphans):
                    self.taken_over_at = time.time()
                    harness.log(
                        f"all {held} taken over {self.taken_over_at - self.killed_at:.1f} s"
                        " after the kill"
                    )
                    return
                time.sleep(0.5)


if __name__ == "__main__":
    sys.exit(main())
