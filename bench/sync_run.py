"""The parent of the sync benchmark (bench/sync.py): the IMAP run against Dovecot and
the Gmail / Graph runs against the fakes of tests/support/fakes. Each step that is measured
runs in a child process of its own (bench/sync_baseline.py, sync_full.py,
sync_incremental.py); this process sets up, samples and prints.
"""

from __future__ import annotations

import json
import os

from bench import corpus, harness
from bench.harness import mib
from bench.sync_baseline import warm_dovecot
from bench.sync_fakes import FakeServer
from bench.sync_full import SCRIPT, run_sync_child
from bench.sync_incremental import NEW_MESSAGES
from bench.sync_report import (
    finish,
    print_idle,
    print_incremental_phases,
    print_load,
    print_memory,
    print_ratio,
    print_sync_details,
    print_sync_line,
)


def wait_if_asked(args, figures: dict) -> None:
    """--wait-quiet; then the load average before the baseline."""
    if args.wait_quiet:
        print(f"waiting up to {args.wait_quiet:.0f} s for a quiet machine ...")
        harness.wait_quiet(args.wait_quiet)
    figures["load"] = {"before_baseline": harness.loadavg()}


def profile_file(args, work) -> str | None:
    """Where --profile keeps the sync's cProfile stats."""
    if not args.profile:
        return None
    return args.profile_out or str(work.root / "sync.prof")


def incremental_args(args, work, child: str, setup, start: int) -> list[str]:
    """The command line of an incremental child: the mailbox, the first new message,
    the --patch files and where --profile keeps its stats."""
    out = [child, "--mailbox", setup.mailbox_id, "--start", str(start)]
    for path in args.patch:
        out += ["--patch", path]
    if args.profile:
        out += ["--profile-file", str(work.root / "incremental.prof")]
    return out


def run(n: int, args) -> int:
    figures: dict = {"n": n, "machine": harness.machine()}
    m = figures["machine"]
    print(
        f"machine: {m['cpu']}, {m['cores']} cores, {m['memory_mib']} MiB; Python {m['python']}, "
        f"{m['dovecot'].split()[0] if m['dovecot'] else '?'} Dovecot, PostgreSQL {m['postgresql']}"
    )
    work = harness.make_workdir(args.db)
    dovecot = smtp = None
    try:
        harness.create_database(work.db_name)
        harness.django_setup()
        harness.migrate()
        dovecot = harness.start_dovecot(work)
        smtp = harness.start_smtp(work)
        setup = harness.create_team_mailbox(dovecot, smtp)
        maildir = harness.prepare_maildir(dovecot, harness.MAIL_USER)
        writer = corpus.MaildirWriter(maildir, dovecot.mail_uid, dovecot.mail_gid)

        stats = corpus.load(writer, 0, n)
        figures["corpus"] = stats
        print(
            f"corpus: {n} messages, {stats['bytes'] / 2**20:.0f} MiB, median {stats['median'] / 1024:.1f} KiB, "
            f"p90 {stats['p90'] / 1024:.0f} KiB, max {stats['max'] / 1024:.0f} KiB; generated and "
            f"written to Maildir in {stats['seconds']:.1f} s ({n / stats['seconds']:.0f} msg/s)"
        )
        figures["dovecot_index_seconds"] = warm_dovecot(dovecot, setup.password)
        print(
            f"dovecot: first SELECT + FETCH 1:* (indexing) {figures['dovecot_index_seconds']:.1f} s"
        )

        baseline_args = [
            "baseline",
            "--host",
            dovecot.host,
            "--port",
            str(dovecot.imaps_port),
            f"--password={setup.password}",  # it may start with "-"
        ]
        wait_if_asked(args, figures)
        figures["file_create_us"] = harness.file_create_micros(work.data_dir)
        print(
            f"file creation: {figures['file_create_us']:.0f} us per new file (here 15-30 us on a "
            "quiet disk, up to ~1 ms within minutes of another run's cleanup: bench/README.md)"
        )
        dovecot_pid = dovecot.process.pid
        d0 = harness.tree_cpu_seconds(dovecot_pid)
        base1 = harness.run_child(SCRIPT, baseline_args, work.root / "baseline1.json")
        base1["dovecot_cpu_seconds"] = harness.tree_cpu_seconds(dovecot_pid) - d0
        figures["load"]["before_sync"] = harness.loadavg()
        print(
            f"baseline: {base1['count']} msgs in {base1['seconds']:.2f} s = "
            f"{base1['count'] / base1['seconds']:.0f} msg/s (fetch {base1['fetch_seconds']:.2f} s, "
            f"parse {base1['parse_seconds']:.2f} s), CPU {base1['cpu_seconds']:.1f} s, "
            f"peak {mib(base1['peak_kib']):.0f} MiB"
        )

        profile_path = profile_file(args, work)
        d0 = harness.tree_cpu_seconds(dovecot_pid)
        sync = run_sync_child(work, setup, profile_path, args.phases, args.patch)
        sync["dovecot_cpu_seconds"] = harness.tree_cpu_seconds(dovecot_pid) - d0
        print_sync_line(sync, args.profile)
        print(
            f"          CPU of the sync process {sync['cpu_seconds']:.1f} s "
            f"({100 * sync['cpu_seconds'] / sync['seconds']:.0f}% of wall), of its parse helper "
            f"{sync.get('helper_cpu_seconds', 0):.1f} s "
            f"({100 * sync.get('helper_cpu_seconds', 0) / sync['seconds']:.0f}%)"
        )
        rss = [s[2] for s in sync["samples"] if len(s) > 2 and s[2]]
        if len(rss) >= 4:
            q = len(rss) // 4
            print(
                "          RSS over the sync (quarters, MiB): "
                + " / ".join(f"{mib(max(rss[k * q : (k + 1) * q] or [0])):.0f}" for k in range(4))
            )
        print_sync_details(sync, figures)

        figures["load"]["after_sync"] = harness.loadavg()
        d0 = harness.tree_cpu_seconds(dovecot_pid)
        base2 = harness.run_child(SCRIPT, baseline_args, work.root / "baseline2.json")
        base2["dovecot_cpu_seconds"] = harness.tree_cpu_seconds(dovecot_pid) - d0
        print(
            f"baseline again: {base2['count'] / base2['seconds']:.0f} msg/s, "
            f"peak {mib(base2['peak_kib']):.0f} MiB"
        )
        print_ratio(sync, [base1, base2])
        # CPU per message, summed over every process that works for it: less
        # sensitive than wall time to other work on the same cores.
        base_cpu = min(
            (b["cpu_seconds"] + b["dovecot_cpu_seconds"]) / b["count"] for b in (base1, base2)
        )
        sync_cpu = (
            sync["cpu_seconds"]
            + sync.get("helper_cpu_seconds", 0)
            + sync["postgres_cpu_seconds"]
            + sync["dovecot_cpu_seconds"]
        ) / max(sync["imported"], 1)
        cpu_ratio = base_cpu / sync_cpu
        figures["cpu_ratio"] = cpu_ratio
        print(
            f"CPU per message: baseline {base_cpu * 1000:.2f} ms (client + Dovecot), sync "
            f"{sync_cpu * 1000:.2f} ms (worker {1000 * sync['cpu_seconds'] / max(sync['imported'], 1):.2f}"
            f" + parse helper {1000 * sync.get('helper_cpu_seconds', 0) / max(sync['imported'], 1):.2f}"
            f" + PostgreSQL backend {1000 * sync['postgres_cpu_seconds'] / max(sync['imported'], 1):.2f}"
            f" + Dovecot {1000 * sync['dovecot_cpu_seconds'] / max(sync['imported'], 1):.2f}); "
            f"CPU ratio {cpu_ratio:.2f}"
        )
        print_load(figures["load"])
        print_memory(sync, base1, base2, figures)

        inc_args = incremental_args(args, work, "incremental", setup, n)
        inc_args += ["--inbox", setup.inbox_id, "--maildir", str(maildir)]
        inc_args += ["--uid", str(dovecot.mail_uid), "--gid", str(dovecot.mail_gid)]
        inc_args += ["--new-rounds", str(args.new_rounds)]
        if not args.no_idle:
            inc_args.append("--idle")
        inc = harness.run_child(SCRIPT, inc_args, work.root / "incremental.json")
        rounds = inc.get("incremental_rounds") or [inc["incremental_seconds"]]
        print(
            f"poll with nothing new: {inc['noop_seconds'] * 1000:.0f} ms; "
            f"{NEW_MESSAGES} new messages: imported {inc['incremental_imported']} in "
            f"{inc['incremental_seconds'] * 1000:.0f} ms (target < 250 ms; median of "
            f"{len(rounds)} rounds: {', '.join(f'{1000 * r:.0f}' for r in rounds)} ms)"
        )
        print_incremental_phases(inc)
        print_idle(inc)
        finish(figures, args, profile_path, [base1, base2], sync, inc)
        return 0
    finally:
        harness.cleanup(work, dovecot, smtp, keep=args.keep, snapshot=args.in_snapshot)


def run_oauth(n: int, args) -> int:
    """``--provider gmail|microsoft``: the same measurements against a fake server."""
    provider = args.provider
    server = {"gmail": "fake Google", "microsoft": "fake Microsoft"}[provider]
    figures: dict = {"n": n, "provider": provider, "machine": harness.machine()}
    m = figures["machine"]
    print(
        f"machine: {m['cpu']}, {m['cores']} cores, {m['memory_mib']} MiB; Python {m['python']}, "
        f"PostgreSQL {m['postgresql']}; provider {provider} ({server} of tests/support/fakes, "
        "in its own process)"
    )
    work = harness.make_workdir(args.db)
    fake = None
    try:
        extra = ["--fake-gzip-level", str(args.fake_gzip_level)]
        if args.profile_fake:
            extra.append("--profile-fake")
        fake = FakeServer(SCRIPT, provider, n, work, extra)
        os.environ.update(fake.call("settings"))  # before Django reads its settings
        harness.create_database(work.db_name)
        harness.django_setup()
        harness.migrate()
        stats = fake.call("wait_loaded")
        figures["corpus"] = stats
        print(
            f"corpus: {n} messages, {stats['bytes'] / 2**20:.0f} MiB, median "
            f"{stats['median'] / 1024:.1f} KiB, p90 {stats['p90'] / 1024:.0f} KiB, max "
            f"{stats['max'] / 1024:.0f} KiB; generated and loaded into the {server} in "
            f"{stats['seconds']:.1f} s; fake server RSS "
            f"{mib(harness.proc_status_kib('VmRSS', str(fake.pid))):.0f} MiB"
        )
        setup = harness.create_oauth_team_mailbox(
            provider, lambda url: fake.call("consent", url=url)
        )
        from inboxes.credentials import tokens_load
        from inboxes.models import Mailbox

        mailbox = Mailbox.objects.get(pk=setup.mailbox_id)
        print(f"mailbox: {mailbox.address} connected with OAuth ({mailbox.provider}), team")
        token = tokens_load(mailbox).access_token
        # The bare loop takes the product's page and batch sizes (it imports no product code).
        if provider == "gmail":
            from inboxes.providers.gmail.session import FETCH_BATCH_SIZE as batch_size
            from inboxes.providers.gmail.session import LIST_PAGE_SIZE as page_size
        else:
            from inboxes.providers.graph.http import MAX_CONCURRENT_REQUESTS as batch_size
            from inboxes.providers.graph.session import DELTA_PAGE_SIZE as page_size
        baseline_args = [f"baseline-{provider}", f"--token={token}", "--address", mailbox.address]
        baseline_args += ["--page-size", str(page_size), "--batch-size", str(batch_size)]
        if args.baseline_only and args.profile:
            baseline_args += ["--profile-file", str(work.root / "baseline.prof")]

        def measured(run) -> dict:
            """Run a step; add the fake server's CPU and request count meanwhile."""
            cpu0, requests0 = harness.cpu_seconds(fake.pid), fake.call("requests")
            result = run()
            result["server_cpu_seconds"] = harness.cpu_seconds(fake.pid) - cpu0
            result["server_requests"] = fake.call("requests") - requests0
            if args.profile_fake:
                result["server_profile"] = fake.call("profile")
            return result

        def baseline(name: str) -> dict:
            result = measured(
                lambda: harness.run_child(SCRIPT, baseline_args, work.root / f"{name}.json")
            )
            rate = result["count"] / result["seconds"]
            print(
                f"{name}: {result['count']} msgs in {result['seconds']:.2f} s = {rate:.0f} msg/s "
                f"(list {result['list_seconds']:.2f} s, fetch/wait {result['fetch_seconds']:.2f} s, "
                f"parse {result['parse_seconds']:.2f} s), CPU {result['cpu_seconds']:.1f} s, "
                f"peak {mib(result['peak_kib']):.0f} MiB; {server}: CPU "
                f"{result['server_cpu_seconds']:.1f} s "
                f"({100 * result['server_cpu_seconds'] / result['seconds']:.0f}% of one core), "
                f"{result['server_requests']} requests"
            )
            if result.get("server_profile"):
                print(f"--- {server} under cProfile during the {name} ---")
                print(result["server_profile"])
            return result

        wait_if_asked(args, figures)
        base1 = baseline("baseline")
        figures["load"]["before_sync"] = harness.loadavg()
        if args.baseline_only:  # does the fake server keep up?
            base2 = baseline("baseline again")
            print(
                f"load average {figures['load']['before_baseline']:.1f} / {harness.loadavg():.1f}"
            )
            return 0

        profile_path = profile_file(args, work)
        sync = measured(
            lambda: run_sync_child(work, setup, profile_path, args.phases, args.patch, provider)
        )
        imported = max(sync["imported"], 1)
        print_sync_line(sync, args.profile)
        print(
            f"          CPU of the sync process {sync['cpu_seconds']:.1f} s "
            f"({100 * sync['cpu_seconds'] / sync['seconds']:.0f}% of wall), of its parse helper "
            f"{sync.get('helper_cpu_seconds', 0):.1f} s; {server}: CPU "
            f"{sync['server_cpu_seconds']:.1f} s "
            f"({100 * sync['server_cpu_seconds'] / sync['seconds']:.0f}% of one core), "
            f"{sync['server_requests']} requests"
        )
        if sync.get("server_profile"):
            print(f"--- {server} under cProfile during the sync ---")
            print(sync["server_profile"])
        print_sync_details(sync, figures)

        figures["load"]["after_sync"] = harness.loadavg()
        base2 = baseline("baseline again")
        print_ratio(sync, [base1, base2])
        # As for IMAP, CPU per message over every process that works for it; the fake
        # stands where Dovecot stands (Google's and Microsoft's servers are not on this
        # machine, so the client-side figures are given without it too).
        base_client = min(b["cpu_seconds"] / b["count"] for b in (base1, base2))
        base_cpu = min(
            (b["cpu_seconds"] + b["server_cpu_seconds"]) / b["count"] for b in (base1, base2)
        )
        sync_client = (
            sync["cpu_seconds"] + sync.get("helper_cpu_seconds", 0) + sync["postgres_cpu_seconds"]
        ) / imported
        sync_cpu = sync_client + sync["server_cpu_seconds"] / imported
        figures["cpu_ratio"] = base_cpu / sync_cpu
        figures["cpu_ratio_without_server"] = base_client / sync_client
        print(
            f"CPU per message: baseline {base_cpu * 1000:.2f} ms (client {base_client * 1000:.2f} + "
            f"{server} {(base_cpu - base_client) * 1000:.2f}), sync {sync_cpu * 1000:.2f} ms (worker "
            f"{1000 * sync['cpu_seconds'] / imported:.2f} + parse helper "
            f"{1000 * sync.get('helper_cpu_seconds', 0) / imported:.2f} + PostgreSQL backend "
            f"{1000 * sync['postgres_cpu_seconds'] / imported:.2f} + {server} "
            f"{1000 * sync['server_cpu_seconds'] / imported:.2f}); CPU ratio "
            f"{figures['cpu_ratio']:.2f} ({figures['cpu_ratio_without_server']:.2f} without the "
            "fake server)"
        )
        print_load(figures["load"])
        print_memory(sync, base1, base2, figures)

        inc_args = incremental_args(args, work, "incremental-oauth", setup, n)
        inc_args += ["--provider", provider, "--fake-control", json.dumps(list(fake.control))]
        if not args.phases:
            inc_args.append("--no-phases")
        inc = measured(lambda: harness.run_child(SCRIPT, inc_args, work.root / "incremental.json"))
        print(
            f"poll with nothing new: {inc['noop_seconds'] * 1000:.0f} ms; {NEW_MESSAGES} new "
            f"messages (put into the {server} in {inc['delivery']['seconds'] * 1000:.0f} ms, not "
            f"timed): imported {inc['incremental_imported']} in "
            f"{inc['incremental_seconds'] * 1000:.0f} ms (target < 250 ms)"
        )
        print_incremental_phases(inc)
        print("(no push latency here: the fakes model neither Gmail's watch nor Graph's webhooks)")
        finish(figures, args, profile_path, [base1, base2], sync, inc)
        return 0
    finally:
        harness.cleanup(work, fake, keep=args.keep, snapshot=args.in_snapshot)
