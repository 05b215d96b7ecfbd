"""Send benchmark: the outbox against a bare smtplib loop over one connection.

    .venv/bin/python bench/send.py [--items 300] [--baseline 2000] [--quick]

Against aiosmtpd (tests/mailservers.SMTPTestServer, STARTTLS + AUTH, in a
process of its own so it does not share this one's GIL) and a local Dovecot:

1. outbox: ``inboxes.sending.outbox_create`` for each item (one transaction
   each, as a user's action), then ``outbox_send(item_id)`` for each, in turn,
   as the send worker does: today every item opens its own SMTP connection
   (TCP, STARTTLS, EHLO, AUTH) and then an IMAP connection to store the copy
   in Sent;
2. baseline: one smtplib connection (STARTTLS, AUTH once), then ``sendmail``
   of the same raw messages, one after the other;
3. a sketch (bench only, not product code) of the proposal in the README:
   the same per-item claim / data_started_at / sent bookkeeping as
   outbox_send, but over one SMTP connection and one IMAP session for all the
   due items of a mailbox.

Prints sends per second for each, the ratio outbox/baseline, and where the
outbox's time goes.
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import harness  # noqa: E402

harness.use_project_root()

SCRIPT = Path(__file__).resolve()


# --- the SMTP server, in its own process ------------------------------------------------------


def child_smtp_server(args) -> None:
    """Run SMTPTestServer until stdin closes; write its ports, then the final count."""
    work = harness.workdir_from_env()
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
        from inboxes.mailconn import ServerSettings

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


class Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def wrap(self, owner, name: str, label: str) -> None:
        original = getattr(owner, name, None)
        if original is None:
            return
        seconds = self.seconds
        seconds.setdefault(label, 0.0)

        def timed(*a, **kw):
            t = time.perf_counter()
            try:
                return original(*a, **kw)
            finally:
                seconds[label] += time.perf_counter() - t

        setattr(owner, name, timed)


def make_items(mailbox, count: int) -> tuple[list, float]:
    from django.db import transaction

    from inboxes.sending import Recipient, outbox_create

    ids = []
    started = time.perf_counter()
    for n in range(count):
        with transaction.atomic():
            item = outbox_create(
                mailbox=mailbox,
                from_name="Bench Support",
                to=[Recipient(f"customer{n}@customer.example.com", f"Customer {n}")],
                subject=f"Re: Question about order {10000 + n}",
                text=f"Hello,\n\nyour order {10000 + n} left our warehouse today.\n\n"
                + "Kind regards,\nBench Support\n" * 3,
                html=f"<p>Hello,</p><p>your order <b>{10000 + n}</b> left our warehouse today.</p>",
            )
        ids.append(item.pk)
    return ids, time.perf_counter() - started


def outbox_loop(ids: list) -> tuple[float, dict, list[str]]:
    from inboxes import sending
    from inboxes.providers.imap import ImapSession, SmtpTransport

    timer = Timer()
    timer.wrap(SmtpTransport, "__enter__", "SMTP connect + STARTTLS + AUTH")
    timer.wrap(SmtpTransport, "send", "SMTP MAIL/RCPT/DATA")
    timer.wrap(SmtpTransport, "__exit__", "SMTP QUIT")
    timer.wrap(sending, "outbox_store_sent_copy", "Sent copy (IMAP connect + login + APPEND)")
    timer.wrap(ImapSession, "store_sent_copy", "  of which APPEND")
    states = []
    started = time.perf_counter()
    for item_id in ids:
        states.append(sending.outbox_send(item_id))
    return time.perf_counter() - started, timer.seconds, states


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


def sketch_reused_connection(mailbox, ids: list) -> tuple[float, list[str]]:
    """Bench-only sketch of the proposal: outbox_send's bookkeeping per item, one
    SMTP connection and one IMAP session for the whole run of due items."""
    from django.db.models import F
    from django.utils import timezone

    from inboxes.models import OutboxItem, OutboxState
    from inboxes.providers import open_session, open_transport

    states = []
    started = time.perf_counter()
    with open_transport(mailbox) as transport, open_session(mailbox) as session:
        for item_id in ids:
            now = timezone.now()
            claimed = OutboxItem.objects.filter(pk=item_id, state=OutboxState.QUEUED).update(
                state=OutboxState.SENDING, claimed_at=now, attempts=F("attempts") + 1
            )
            if not claimed:
                continue
            item = OutboxItem.objects.select_related("message").get(pk=item_id)
            with item.message.raw.open("rb") as handle:
                raw = handle.read()

            def before_data(pk=item.pk) -> None:
                OutboxItem.objects.filter(pk=pk).update(data_started_at=timezone.now())

            result = transport.send(
                raw,
                envelope_from=item.envelope_from,
                recipients=item.recipients,
                before_data=before_data,
            )
            OutboxItem.objects.filter(pk=item.pk).update(
                state=OutboxState.SENT, detail=result.detail[:4000], sent_at=timezone.now()
            )
            session.store_sent_copy(raw)
            OutboxItem.objects.filter(pk=item.pk).update(sent_copy_stored=True)
            states.append(OutboxState.SENT)
    return time.perf_counter() - started, states


# --- main -------------------------------------------------------------------------------------------


def main() -> int:
    harness.snapshot_and_reexec(SCRIPT, sys.argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=300, help="outbox items to send (300)")
    parser.add_argument("--baseline", type=int, default=2000, help="baseline sends (2000)")
    parser.add_argument("--quick", action="store_true", help="100 items, 500 baseline sends")
    parser.add_argument("--no-sketch", action="store_true", help="skip the reuse sketch")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument(
        "--db", default=harness.DEFAULT_DB + "_send", help="database name (dropped!)"
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
        args.items, args.baseline = 100, 500
    if args.json:
        args.json = os.path.abspath(args.json)
    return run(args)


def run(args) -> int:
    figures: dict = {"machine": harness.machine()}
    m = figures["machine"]
    print(f"machine: {m['cpu']}, {m['cores']} cores; Python {m['python']}")
    work = harness.make_workdir(args.db)
    dovecot = smtp = None
    password = secrets.token_urlsafe(16)
    try:
        harness.create_database(work.db_name)
        harness.django_setup()
        harness.migrate()
        dovecot = harness.start_dovecot(work)
        smtp = RemoteSMTP(work, password)
        setup = harness.create_team_mailbox(dovecot, smtp, password=password)
        from inboxes.models import Mailbox

        mailbox = Mailbox.objects.get(pk=setup.mailbox_id)
        figures["load_start"] = harness.loadavg()

        ids, create_seconds = make_items(mailbox, args.items)
        print(
            f"outbox_create: {args.items} items in {create_seconds:.2f} s = "
            f"{args.items / create_seconds:.0f}/s (one transaction each, send enqueued on commit)"
        )
        seconds, phases, states = outbox_loop(ids)
        sent = states.count("sent")
        outbox_rate = sent / seconds
        print(
            f"outbox_send: {sent} of {len(ids)} sent in {seconds:.2f} s = {outbox_rate:.0f} sends/s "
            f"({1000 * seconds / len(ids):.1f} ms per item)"
        )
        for label, value in phases.items():
            print(
                f"    {label:44s} {1000 * value / len(ids):6.2f} ms/item  {100 * value / seconds:5.1f}%"
            )
        rest = seconds - sum(v for k, v in phases.items() if not k.startswith("  "))
        print(
            f"    {'the rest (claim, reads, state updates)':44s} {1000 * rest / len(ids):6.2f} ms/item"
        )

        messages = raw_messages(ids)
        base_seconds = smtplib_loop(smtp.port, password, messages, args.baseline)
        base_rate = args.baseline / base_seconds
        print(
            f"baseline: smtplib, one connection, {args.baseline} sends in {base_seconds:.2f} s = "
            f"{base_rate:.0f} sends/s"
        )
        ratio = outbox_rate / base_rate
        print(f"ratio (outbox/baseline): {ratio:.2f}")
        figures.update(
            items=args.items,
            create_seconds=create_seconds,
            outbox_seconds=seconds,
            outbox_rate=outbox_rate,
            outbox_phases=phases,
            baseline_sends=args.baseline,
            baseline_seconds=base_seconds,
            baseline_rate=base_rate,
            ratio=ratio,
        )
        if not args.no_sketch:
            ids2, _ = make_items(mailbox, args.items)
            sketch_seconds, sketch_states = sketch_reused_connection(mailbox, ids2)
            sketch_rate = sketch_states.count("sent") / sketch_seconds
            print(
                f"sketch (bench only): one SMTP + one IMAP connection for {len(ids2)} items: "
                f"{sketch_rate:.0f} sends/s ({sketch_rate / outbox_rate:.1f}x today's outbox)"
            )
            figures.update(sketch_seconds=sketch_seconds, sketch_rate=sketch_rate)
        figures["load_end"] = harness.loadavg()
        print(
            f"load average at start {figures['load_start']:.1f}, end {figures['load_end']:.1f}"
            + ("  [machine busy: figures skewed]" if figures["load_end"] > 1.5 else "")
        )
        print("targets:")
        print(
            f"  [{'met' if outbox_rate >= 500 else 'NOT met'}] outbox sends >= 500/s: "
            f"{outbox_rate:.0f}/s (baseline over one reused connection: {base_rate:.0f}/s)"
        )
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=2, default=str))
            print(f"figures written to {args.json}")
        return 0
    finally:
        received = smtp.stop() if smtp is not None else None
        if received is not None:
            print(f"(the SMTP server received {received} messages)")
        harness.cleanup(work, dovecot, None, keep=args.keep, snapshot=args.in_snapshot)


if __name__ == "__main__":
    sys.exit(main())
