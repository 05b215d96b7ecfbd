"""Send benchmark: the outbox's send run against a bare smtplib loop over one connection.

    .venv/bin/python bench/send.py [--items 2000] [--baseline 2000] [--quick]
                                   [--reconnect-every 100] [--profile]
                                   [--compare-with OTHER/run.py [--rounds 5]] [--personal]

Against aiosmtpd (tests/support/mailservers.SMTPTestServer, STARTTLS + AUTH, in a
process of its own so it does not share this one's GIL) and a local Dovecot:

1. ``inboxes.outbox.outbox_create`` for each item (one transaction each, as a
   user's action; the send run is asked for on commit);
2. the send run, as the send worker does: ``inboxes.outbox.outbox_send_run``
   for the mailbox, which claims, sends over one SMTP connection, and stores
   the Sent copies over one IMAP session; sends per second from its start until
   every item is settled, Sent copies included;
3. the same for a second set of items with the Sent copy phase switched off
   (in this process only), to show what the copies cost;
4. baseline: one smtplib connection (STARTTLS, AUTH once), then ``sendmail``
   of the same raw messages, one after the other.

With ``--personal`` the mailbox is a personal one, whose send limits the run keeps
(a count of its sends in the rolling windows per claim, ``inboxes/outbox/limits.py``),
raised above anything the benchmark sends so that nothing is held: what the check
costs. ``--compare-with`` the run.py of before the limits (it claims without them)
pairs the two on the same mailbox.

Prints sends per second for each, the ``ratio`` run/baseline, where the run's
time goes, and checks that the server received every item exactly once.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import smtplib
import ssl
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import harness  # noqa: E402

harness.use_project_root()

SCRIPT = Path(__file__).resolve()


# --- the SMTP server, in its own process ------------------------------------------------------


def child_smtp_server(args) -> None:
    """Run SMTPTestServer until stdin closes; write its ports, then the final count."""
    import logging

    # aiosmtpd 1.4 logs (log.warning on the "mail.log" logger, not warnings.warn)
    # that its own Session.login_data is deprecated, on every AUTH: drop that line
    # before it is formatted and written.
    def not_login_data(record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Session.login_data is deprecated")

    logging.getLogger("mail.log").addFilter(not_login_data)
    work = harness.workdir_from_env()
    # tests/support/mailservers.py imports the product's models (ServerSettings).
    harness.django_setup()
    server = harness.start_smtp(work)
    server.add_user(harness.MAIL_USER, args.password)
    Path(args.result_file).write_text(
        json.dumps({"port": server.port, "smtps_port": server.smtps_port, "pid": os.getpid()})
    )
    sys.stdin.read()  # the parent closes it when done
    count = len(server.messages)
    server.stop()
    Path(args.result_file + ".done").write_text(json.dumps({"received": count}))


class RemoteSMTP:
    """Stands in for SMTPTestServer in this process (the server runs in a child)."""

    host = "127.0.0.1"

    def __init__(self, work, password: str) -> None:
        self.result_file = work.root / "smtp-server.json"
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(SCRIPT),
                "--child",
                "smtp-server",
                f"--password={password}",  # it may start with "-"
                "--result-file",
                str(self.result_file),
            ],
            stdin=subprocess.PIPE,
            cwd=harness.ROOT,
        )
        deadline = time.monotonic() + 20
        while not self.result_file.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the SMTP server process did not start")
            time.sleep(0.05)
        time.sleep(0.05)
        info = json.loads(self.result_file.read_text())
        self.port, self.smtps_port = info["port"], info["smtps_port"]

    def add_user(self, username: str, password: str) -> None:
        pass  # given at start

    def smtp_settings(self, username: str, password: str, security: str = "starttls"):
        from inboxes.providers.imap.connection import ServerSettings

        port = self.smtps_port if security == "ssl" else self.port
        return ServerSettings(
            host="127.0.0.1", port=port, security=security, username=username, password=password
        )

    def stop(self) -> int | None:
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()  # our own child, by its handle
                self.process.wait()
        done = Path(str(self.result_file) + ".done")
        return json.loads(done.read_text())["received"] if done.exists() else None


# --- measurements --------------------------------------------------------------------------------


def make_items(mailbox, count: int) -> tuple[list, float]:
    from django.db import transaction

    ids = []
    started = time.perf_counter()
    for n in range(count):
        with transaction.atomic():
            ids.append(bench_reply(mailbox, n).pk)
    return ids, time.perf_counter() - started


def bench_reply(mailbox, n: int):
    """Outbox item number ``n`` of a run: a short reply to a customer."""
    from inboxes.outbox import Recipient, outbox_create

    return outbox_create(
        mailbox=mailbox,
        from_name="Bench Support",
        to=[Recipient(f"customer{n}@customer.example.com", f"Customer {n}")],
        subject=f"Re: Question about order {10000 + n}",
        text=f"Hello,\n\nyour order {10000 + n} left our warehouse today.\n\n"
        + "Kind regards,\nBench Support\n" * 3,
        html=f"<p>Hello,</p><p>your order <b>{10000 + n}</b> left our warehouse today.</p>",
    )


def cpu_probe(smtp, dovecot):
    """CPU seconds so far of the processes a send run keeps busy (2 cores for all)."""
    backend = harness.backend_pid()

    def now() -> dict[str, float]:
        return {
            "this process (the run and its copy thread)": harness.cpu_seconds(os.getpid()),
            "SMTP server (aiosmtpd, own process)": harness.cpu_seconds(smtp.process.pid),
            "Dovecot (imap processes)": harness.tree_cpu_seconds(dovecot.process.pid),
            "PostgreSQL (the run's backend)": harness.cpu_seconds(backend),
        }

    return now


def print_cpu(before: dict, after: dict, seconds: float, count: int) -> None:
    print(f"    CPU during it ({seconds:.2f} s on 2 cores):")
    for label, value in after.items():
        used = value - before[label]
        print(f"      {label:44s} {1000 * used / count:6.3f} ms/item  {used / seconds:4.2f} cores")


def send_runs(mailbox, ids: list, *, copies: bool, send_run=None) -> tuple[float, dict, dict]:
    """Send runs of the mailbox, as the worker does, until every item is settled
    (``send_run``: the module to run, inboxes/outbox/run.py unless given)."""
    from django.db.models import Count

    from inboxes.models import OutboxItem
    from inboxes.outbox import marks, sent_copies
    from inboxes.providers.imap.transport import SmtpTransport

    if send_run is None:
        from inboxes.outbox import run as send_run
    timer = harness.PhaseTimer()
    timer.wrap(send_run, "claim_due", "claim (one statement per 100)")
    timer.wrap(send_run, "read_raw", "raw file read")
    timer.wrap(SmtpTransport, "__enter__", "SMTP connect + STARTTLS + AUTH")
    timer.wrap(SmtpTransport, "send", "SMTP MAIL/RCPT/DATA (incl. the marks)")
    timer.wrap(marks, "_commit", "  of which the marks (one statement per item)")
    timer.wrap(sent_copies.SentCopies, "store", "Sent copies (one IMAP session, MULTIAPPEND)")
    timer.wrap(sent_copies, "append_sent_copies", "  of which MULTIAPPEND")
    original_add = sent_copies.SentCopies.add
    if not copies:
        sent_copies.SentCopies.add = lambda self, entry, raw: None
    totals = {"runs": 0, "connections": 0, "copies": 0}
    try:
        started = time.perf_counter()
        while OutboxItem.objects.filter(pk__in=ids, state__in=["queued", "sending"]).exists():
            result = send_run.outbox_send_run(mailbox.pk)
            totals["runs"] += 1
            totals["connections"] += result.connections
            totals["copies"] += result.copies
            if not result.claimed:
                break
        seconds = time.perf_counter() - started
    finally:
        sent_copies.SentCopies.add = original_add
        timer.restore()
    states = dict(
        OutboxItem.objects.filter(pk__in=ids)
        .values("state")
        .annotate(n=Count("pk"))
        .order_by()
        .values_list("state", "n")
    )
    totals["states"] = states
    totals["copies_stored"] = OutboxItem.objects.filter(pk__in=ids, sent_copy_stored=True).count()
    return seconds, timer.seconds, totals


def make_personal(setup) -> None:
    """The bench's mailbox as the admin's personal email, limits far above the run's
    sends (set on the row: above what an admin may set): every claim counts the
    day's sends, none is held."""
    from inboxes.models import Inbox, Mailbox

    Inbox.objects.filter(pk=setup.inbox_id).update(mailbox=None)
    Mailbox.objects.filter(pk=setup.mailbox_id).update(
        kind="personal",
        owner_id=setup.admin_id,
        send_limit_per_day=10_000_000,
        send_limit_per_minute=10_000_000,
    )
    print("a personal mailbox: the run counts its sends per claim (limits 10,000,000)")


def make_items_quickly(mailbox, count: int) -> list:
    """Items for the comparison rounds: 100 per transaction (the send is measured)."""
    from django.db import transaction

    ids = []
    for start in range(0, count, 100):
        with transaction.atomic():
            for n in range(start, min(count, start + 100)):
                ids.append(bench_reply(mailbox, n).pk)
    return ids


def load_send_run(path: str):
    """Another version of inboxes/outbox/run.py (e.g. ``git show REV:inboxes/outbox/run.py``),
    loaded beside the current one, to run against the same servers."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("inboxes.outbox.run_compared", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def compare(mailbox, other_path: str, rounds: int, items: int) -> dict:
    """Alternate the current send run and ``other_path``'s, ``rounds`` times each
    (Sent copies included), so both see the same machine; the median of each."""
    import statistics

    from inboxes.outbox import run as send_run

    variants = {"this tree": send_run, other_path: load_send_run(other_path)}
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for n in range(rounds):
        order = list(variants.items())
        if n % 2:
            order.reverse()
        for name, module in order:
            ids = make_items_quickly(mailbox, items)
            seconds, _, totals = send_runs(mailbox, ids, copies=True, send_run=module)
            rates[name].append(totals["states"].get("sent", 0) / seconds)
    print(f"comparison, {rounds} alternating rounds of {items} items each (Sent copies included):")
    for name, values in rates.items():
        print(
            f"  {name:40s} median {statistics.median(values):5.0f}/s  "
            + " ".join(f"{v:.0f}" for v in values)
        )
    return {name: statistics.median(values) for name, values in rates.items()}


def raw_messages(ids: list) -> list[tuple[str, list[str], bytes]]:
    from inboxes.models import OutboxItem

    out = []
    for item in OutboxItem.objects.filter(pk__in=ids).select_related("message"):
        with item.message.raw.open("rb") as handle:
            out.append((item.envelope_from, list(item.recipients), handle.read()))
    return out


def smtplib_loop(port: int, password: str, messages: list, count: int) -> float:
    """The baseline: one connection, STARTTLS and AUTH once, then sendmail per message."""
    context = ssl.create_default_context(cafile=os.environ["MAIL_TLS_CA_FILE"])
    started = time.perf_counter()
    smtp = smtplib.SMTP("127.0.0.1", port, local_hostname="localhost", timeout=30)
    smtp.starttls(context=context)
    smtp.login(harness.MAIL_USER, password)
    for n in range(count):
        sender, recipients, raw = messages[n % len(messages)]
        smtp.sendmail(sender, recipients, raw)
    smtp.quit()
    return time.perf_counter() - started


# --- main -------------------------------------------------------------------------------------------


def main() -> int:
    harness.snapshot_and_reexec(SCRIPT, sys.argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=2000, help="items per send run set (2000)")
    parser.add_argument("--baseline", type=int, default=2000, help="baseline sends (2000)")
    parser.add_argument("--quick", action="store_true", help="300 items, 500 baseline")
    parser.add_argument(
        "--reconnect-every", type=int, help="inboxes.outbox.run.RECONNECT_EVERY for this run"
    )
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument(
        "--compare-with",
        help="inboxes/outbox/run.py of another version: alternate it with this tree's, then stop",
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds of --compare-with (5)")
    parser.add_argument(
        "--profile", action="store_true", help="cProfile the send run's thread (slows it down)"
    )
    parser.add_argument(
        "--db", default=harness.DEFAULT_DB + "_send", help="database name (dropped!)"
    )
    parser.add_argument(
        "--personal",
        action="store_true",
        help="a personal mailbox: the run keeps its send limits (raised so nothing waits)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the database and files")
    parser.add_argument("--no-snapshot", action="store_true", help="run the working tree")
    parser.add_argument("--in-snapshot", help=argparse.SUPPRESS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--password", help=argparse.SUPPRESS)
    parser.add_argument("--result-file", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child == "smtp-server":
        child_smtp_server(args)
        return 0
    if args.quick:
        args.items, args.baseline = 300, 500
    if args.json:
        args.json = os.path.abspath(args.json)
    if args.compare_with:
        args.compare_with = os.path.abspath(args.compare_with)
    return run(args)


def measured_send_runs(mailbox, ids: list, cpu, *, copies: bool, profile: bool = False):
    """``send_runs`` with the CPU of each process busy with it (``cpu``: a
    ``cpu_probe``) before and after, and with --profile a cProfile of it."""
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    before = cpu()
    seconds, phases, totals = send_runs(mailbox, ids, copies=copies)
    after = cpu()
    sent = totals["states"].get("sent", 0)
    if profiler is not None:
        import pstats

        profiler.disable()
        print("profile of the send run's thread (with the profiler's overhead):")
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
    return SimpleNamespace(
        seconds=seconds,
        phases=phases,
        totals=totals,
        cpu_used=(before, after),
        sent=sent,
        rate=sent / seconds,
        count=len(ids),
    )


def print_phases(measured: SimpleNamespace) -> None:
    """Where a send run's time went (its thread's phases), then the CPU of each process."""
    phases, seconds, count = measured.phases, measured.seconds, measured.count
    for label, value in phases.items():
        print(f"    {label:46s} {1000 * value / count:6.3f} ms/item  {100 * value / seconds:5.1f}%")
    top = sum(v for k, v in phases.items() if not k.startswith("  "))
    print(
        f"    {'the rest (outcomes, loop, lease)':46s} {1000 * (seconds - top) / count:6.3f} ms/item"
    )
    print_cpu(*measured.cpu_used, seconds, count)


def run(args) -> int:
    figures: dict = {"machine": harness.machine()}
    m = figures["machine"]
    print(f"machine: {m['cpu']}, {m['cores']} cores; Python {m['python']}")
    work = harness.make_workdir(args.db)
    dovecot = smtp = None
    password = secrets.token_urlsafe(16)
    expected_received = 0
    try:
        harness.create_database(work.db_name)
        harness.django_setup()
        harness.migrate()
        dovecot = harness.start_dovecot(work)
        smtp = RemoteSMTP(work, password)
        setup = harness.create_team_mailbox(dovecot, smtp, password=password)
        from inboxes.models import Mailbox, OutboxItem
        from inboxes.outbox import run as send_run

        if args.reconnect_every:
            send_run.RECONNECT_EVERY = args.reconnect_every
        figures["reconnect_every"] = send_run.RECONNECT_EVERY
        if args.personal:
            make_personal(setup)
        figures["personal"] = args.personal
        mailbox = Mailbox.objects.get(pk=setup.mailbox_id)
        figures["load_start"] = harness.loadavg()
        print(
            f"load average at start {figures['load_start']:.2f}; "
            f"a new SMTP connection every {send_run.RECONNECT_EVERY} messages"
        )

        if args.compare_with:
            figures["compare"] = compare(mailbox, args.compare_with, args.rounds, args.items)
            expected_received = OutboxItem.objects.filter(state="sent").count()
            return 0

        ids, create_seconds = make_items(mailbox, args.items)
        print(
            f"outbox_create: {args.items} items in {create_seconds:.2f} s = "
            f"{args.items / create_seconds:.0f}/s (one transaction each, run asked for on commit)"
        )
        cpu = cpu_probe(smtp, dovecot)
        full = measured_send_runs(mailbox, ids, cpu, copies=True, profile=args.profile)
        run_rate, totals = full.rate, full.totals
        expected_received += full.sent
        print(
            f"send run: {full.sent} of {len(ids)} sent in {full.seconds:.2f} s = "
            f"{run_rate:.0f} sends/s ({1000 * full.seconds / len(ids):.2f} ms per item; "
            f"{totals['runs']} run(s), {totals['connections']} SMTP connection(s), "
            f"{totals['copies_stored']} Sent copies)"
        )
        print_phases(full)
        figures.update(
            items=args.items,
            create_seconds=create_seconds,
            run_seconds=full.seconds,
            run_rate=run_rate,
            run_phases=full.phases,
            run_totals=totals,
        )

        bare_ids, _ = make_items(mailbox, args.items)
        bare = measured_send_runs(mailbox, bare_ids, cpu, copies=False)
        bare_rate = bare.rate
        expected_received += bare.sent
        print(
            f"send run without the Sent copy phase: {bare.sent} of {len(bare_ids)} in "
            f"{bare.seconds:.2f} s = {bare_rate:.0f} sends/s "
            f"({1000 * bare.seconds / len(bare_ids):.2f} ms per item)"
        )
        print_phases(bare)
        figures.update(bare_seconds=bare.seconds, bare_rate=bare_rate, bare_phases=bare.phases)

        messages = raw_messages(ids[:300])
        base_seconds = smtplib_loop(smtp.port, password, messages, args.baseline)
        base_rate = args.baseline / base_seconds
        expected_received += args.baseline
        print(
            f"baseline: smtplib, one connection, {args.baseline} sends in {base_seconds:.2f} s = "
            f"{base_rate:.0f} sends/s"
        )
        ratio = run_rate / base_rate
        print(f"ratio (send run with Sent copies / baseline): {ratio:.2f}")
        print(f"ratio (send run without Sent copies / baseline): {bare_rate / base_rate:.2f}")
        figures.update(
            baseline_sends=args.baseline,
            baseline_seconds=base_seconds,
            baseline_rate=base_rate,
            ratio=ratio,
        )
        figures["load_end"] = harness.loadavg()
        print(
            f"load average at start {figures['load_start']:.2f}, end {figures['load_end']:.2f}"
            + ("  [machine busy: figures skewed]" if figures["load_end"] > 1.5 else "")
        )
        print("targets:")
        print(
            f"  [{'met' if run_rate >= 500 else 'NOT met'}] outbox sends >= 500/s: "
            f"{run_rate:.0f}/s with Sent copies, {bare_rate:.0f}/s without "
            f"(baseline over one reused connection: {base_rate:.0f}/s)"
        )
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=2, default=str))
            print(f"figures written to {args.json}")
        return 0
    finally:
        received = smtp.stop() if smtp is not None else None
        if received is not None:
            verdict = "each once" if received == expected_received else "MISMATCH"
            print(
                f"(the SMTP server received {received} messages; {expected_received} "
                f"expected: {verdict})"
            )
        harness.cleanup(work, dovecot, None, keep=args.keep, snapshot=args.in_snapshot)


if __name__ == "__main__":
    sys.exit(main())
