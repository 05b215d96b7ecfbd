"""Personal mailbox sync against the same mailbox synced as a team mailbox, paired.

    .venv/bin/python bench/personal.py [N] [--quick] [--rounds R] [--share 0.10]

Issue 14's target: a personal mailbox's full sync of N messages (10,000) of which a
share (10%) are with the account's contacts runs at >= 0.8x the msg/s of the same
mailbox synced as a team mailbox. The CRM decides per message what to keep (a set
lookup after one query per batch) and stores and logs only that; the team mailbox
stores and threads everything.

The corpus of bench/corpus.py is written once into a Maildir; each round gives two
fresh Dovecot users hard links to the same files (indexed once by Dovecot before
anything is timed) and two fresh accounts: one with the team mailbox and its inbox,
one with the personal mailbox (the same address; its owner's replies in the corpus
are their own sent mail) and its contacts (the corpus's customers of about ``share``
of the messages, plus 5,000 other contacts). Then the two full syncs, each
``inboxes.sync.mailbox_sync`` in a fresh process as ``bench/sync.py`` runs it, one
after the other, the order alternating by round, from this one process: pairs on
the same machine at the same moment, so the ratio holds up when the load moves.
Prints each pair and the median ratio against the target. Needs what bench/sync.py
needs (bench/README.md).
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import harness  # noqa: E402

harness.use_project_root()

from bench import corpus  # noqa: E402
from bench.sync_baseline import warm_dovecot  # noqa: E402
from bench.sync_full import run_sync_child  # noqa: E402

SCRIPT = Path(__file__).resolve()
TARGET = 0.8
OTHER_CONTACTS = 5_000
# Newsletters and bounces of a customer's thread come from other addresses.
CUSTOMER_MAIL_SHARE = 0.93


def contact_addresses(n: int, share: float) -> list[str]:
    """Customers of the corpus whose threads hold about ``share`` of its n messages."""
    per_customer: dict[str, int] = {}
    for i in range(n):
        _parent, root, _subject = corpus._thread_info_iter(i)
        address = corpus._customer(random.Random(corpus.SEED + root))[1]
        per_customer[address] = per_customer.get(address, 0) + 1
    order = sorted(per_customer)
    random.Random(14).shuffle(order)
    chosen, covered = [], 0
    for address in order:
        if covered >= share * n / CUSTOMER_MAIL_SHARE:
            break
        chosen.append(address)
        covered += per_customer[address]
    return chosen


def link_maildir(source: Path, target: Path) -> None:
    """Hard links to the corpus's files (Dovecot only reads them and renames its own)."""
    for sub in ("cur", "new"):
        for path in (source / sub).iterdir():
            os.link(path, target / sub / path.name)


def mail_user(dovecot, smtp, name: str, source: Path) -> tuple[str, str, float]:
    password = secrets.token_urlsafe(16)
    dovecot.add_user(name, password)
    smtp.add_user(name, password)
    link_maildir(source, harness.prepare_maildir(dovecot, name))
    return name, password, warm_dovecot(dovecot, password, name)


def connect(dovecot, smtp, user: tuple[str, str, float], kind: str, round_no: int):
    """A fresh account and its mailbox of ``kind`` on ``user``, through the services."""
    from accounts.services import account_create
    from inboxes.models import Inbox, Mailbox
    from inboxes.services import ServerInput, mailbox_connect

    account, admin, _token = account_create(
        name=f"Bench {kind} {round_no}",
        plan="professional",
        admin_email=f"admin-{kind}-{round_no}@bench.example.com",
        admin_password=secrets.token_urlsafe(16),
        admin_full_name="Bench Rep",
    )
    inbox = None
    if kind == "team":
        inbox = Inbox.objects.create(account=account, name="Support", from_name="Bench Support")
    imap = dovecot.imap_settings(user[0], user[1])
    smtp_settings = smtp.smtp_settings(user[0], user[1])
    mailbox = mailbox_connect(
        actor=admin,
        address=harness.TEAM_ADDRESS,
        kind=kind,
        imap=ServerInput(imap.host, imap.port, imap.security, imap.username, imap.password),
        smtp=ServerInput(
            smtp_settings.host,
            smtp_settings.port,
            smtp_settings.security,
            smtp_settings.username,
            smtp_settings.password,
        ),
        acknowledge_team_visibility=kind == "team",
        inbox=inbox,
        backfill_days=None,
    )
    Mailbox.objects.filter(pk=mailbox.pk).update(backfill_days=None)
    setup = harness.Setup(
        str(account.pk), str(admin.pk), str(inbox.pk) if inbox else "", str(mailbox.pk), user[1]
    )
    return account, setup


def add_contacts(account, customers: list[str]) -> None:
    from crm.models import Contact
    from inboxes.addresses import canonical_address

    rows, seen = [], set()
    others = [f"prospect{n}@prospects.example.net" for n in range(OTHER_CONTACTS)]
    for address in customers + others:
        canonical = canonical_address(address)
        if canonical not in seen:
            seen.add(canonical)
            rows.append(Contact(account=account, email=address, canonical_email=canonical))
    Contact.objects.bulk_create(rows, batch_size=2000)


def stored(account_id: str) -> dict:
    from crm.models import Email
    from inboxes.models import Message

    return {
        "messages": Message.objects.filter(account_id=account_id).count(),
        "crm_emails": Email.objects.filter(account_id=account_id).count(),
        "inbound": Email.objects.filter(account_id=account_id, direction="inbound").count(),
    }


def cpu_ms(sync: dict) -> float:
    total = sync["cpu_seconds"] + sync.get("helper_cpu_seconds", 0) + sync["postgres_cpu_seconds"]
    return 1000 * total / max(sync["imported"], 1)


def main() -> int:
    harness.snapshot_and_reexec(SCRIPT, sys.argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("n", nargs="?", type=int, default=10_000, help="messages (10,000)")
    parser.add_argument("--quick", action="store_true", help="2,000 messages")
    parser.add_argument("--rounds", type=int, default=2, help="pairs of syncs (2)")
    parser.add_argument("--share", type=float, default=0.10, help="mail with contacts (0.10)")
    parser.add_argument("--db", default="postkamer_bench_personal", help="database (dropped!)")
    parser.add_argument("--keep", action="store_true", help="keep the database and files")
    parser.add_argument("--no-snapshot", action="store_true", help="run the working tree")
    parser.add_argument("--in-snapshot", help=argparse.SUPPRESS)
    args = parser.parse_args()
    n = 2_000 if args.quick else args.n

    m = harness.machine()
    print(
        f"machine: {m['cpu']}, {m['cores']} cores; Python {m['python']}, PostgreSQL "
        f"{m['postgresql']}; {n} messages, {args.share:.0%} with contacts, {args.rounds} rounds"
    )
    work = harness.make_workdir(args.db)
    dovecot = smtp = None
    try:
        harness.create_database(work.db_name)
        harness.django_setup()
        harness.migrate()
        dovecot = harness.start_dovecot(work)
        smtp = harness.start_smtp(work)
        source = harness.prepare_maildir(dovecot, "corpus")
        stats = corpus.load(corpus.MaildirWriter(source, dovecot.mail_uid, dovecot.mail_gid), 0, n)
        print(f"corpus: {n} messages, {stats['bytes'] / 2**20:.0f} MiB in {stats['seconds']:.0f} s")
        customers = contact_addresses(n, args.share)

        pairs = []
        for round_no in range(1, args.rounds + 1):
            team_user = mail_user(dovecot, smtp, f"team{round_no}", source)
            rep_user = mail_user(dovecot, smtp, f"rep{round_no}", source)
            _team_account, team = connect(dovecot, smtp, team_user, "team", round_no)
            rep_account, rep = connect(dovecot, smtp, rep_user, "personal", round_no)
            add_contacts(rep_account, customers)
            order = ["team", "personal"] if round_no % 2 else ["personal", "team"]
            results: dict[str, dict] = {}
            load = harness.loadavg()
            for kind in order:
                setup = team if kind == "team" else rep
                results[kind] = run_sync_child(work, setup, None, False, None)
            t, p = results["team"], results["personal"]
            kept = stored(rep.account_id)
            team_rate, rep_rate = t["imported"] / t["seconds"], p["imported"] / p["seconds"]
            ratio = rep_rate / team_rate
            pairs.append(
                {"ratio": ratio, "team": team_rate, "personal": rep_rate, "load": load, **kept}
            )
            print(
                f"round {round_no} ({' then '.join(order)}, load {load:.1f}): "
                f"team {t['imported']} msgs in {t['seconds']:.1f} s = {team_rate:.0f} msg/s "
                f"(CPU {cpu_ms(t):.2f} ms/msg, stored {t['counts']['messages']}); personal "
                f"{p['imported']} in {p['seconds']:.1f} s = {rep_rate:.0f} msg/s (CPU "
                f"{cpu_ms(p):.2f} ms/msg, kept {kept['messages']} = "
                f"{kept['messages'] / n:.1%}, {kept['crm_emails']} CRM emails, "
                f"{kept['inbound']} inbound); ratio {ratio:.2f}"
            )
        median = statistics.median(pair["ratio"] for pair in pairs)
        verdict = "met" if median >= TARGET else "NOT met"
        each = ", ".join(f"{pair['ratio']:.2f}" for pair in pairs)
        print(
            f"personal / team full sync: ratio {median:.2f} (median of {each}); "
            f"target >= {TARGET}: {verdict}"
        )
        print(f"finished {time.strftime('%H:%M:%S')}")
        return 0 if median >= TARGET else 1
    finally:
        harness.cleanup(work, dovecot, smtp, keep=args.keep, snapshot=args.in_snapshot)


if __name__ == "__main__":
    sys.exit(main())
