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
  (inbox, status=open, assignee, unassigned) and, reported apart, search;
* the inbox page and its list fragment with the views unassigned, mine, open,
  closed and per inbox, if the page exists (``/inbox/``, found by walking the
  URLconf); otherwise the selector behind it (``conversation_list(view=...)``)
  is measured and the report says so; the page's deep page (the 10th "Show more":
  the 50 rows after a keyset cursor, appended by htmx) and the 3-second poll, also
  with 9 pages appended below the first;
* opening a conversation of exactly 50 messages (API and page).

It prints p50/p95/mean per case, SQL queries per request, the targets (list
p95 < 100 ms, conversation p95 < 150 ms) and EXPLAIN ANALYZE of the slowest
list, search and conversation queries. ``--json PATH`` keeps everything;
``--profile`` adds a cProfile of the slowest cases. Figures: bench/INBOX_RESULTS.md.

The measured code is a snapshot of the tree taken at start (others edit it
meanwhile); ``--no-snapshot`` measures the live tree.
"""

from __future__ import annotations

import argparse
import atexit
import hashlib
import heapq
import json
import math
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from html import unescape
from pathlib import Path

SCRIPT = Path(__file__).resolve()
ROOT = SCRIPT.parent.parent
DEFAULT_DB = "postkamer_inbox_bench"
PG_HOST = "127.0.0.1"
PG_PORT = 5432
PG_ADMIN_URL = f"postgresql://postgres@{PG_HOST}:{PG_PORT}/postgres"
META_TABLE = "bench_inbox_meta"
LOAD_VERSION = 3  # bump when the generated data changes

SEED = 20250630
END = datetime(2025, 6, 30, 17, 0, tzinfo=UTC)
SPAN_SECONDS = 730 * 86400
START_TS = END.timestamp() - SPAN_SECONDS
END_TS = END.timestamp()

DOMAIN = "inbox-bench.example.com"
INBOXES = (  # name, share of conversations, restricted to the team
    ("Support", 0.60, False),
    ("Sales", 0.25, False),
    ("Billing", 0.15, True),
)
AGENTS = 20
TEAM_SIZE = 8  # agents 0..7 are in the Billing team (agent 0 is the one measured)
FIFTY = 20  # conversations with exactly 50 messages
LONG = 30  # conversations with 60-120 messages

LIST_TARGET_MS = 100.0
PAGE = 50  # rows per page of the inbox list
SHOW_MORE_DEPTH = 10  # the deep page measured: the 10th "Show more"
DETAIL_TARGET_MS = 150.0

SNAPSHOT_IGNORE = (
    ".venv",
    ".git",
    "var",
    "build",
    "__pycache__",
    ".ruff_cache",
    ".hypothesis",
    ".pytest_cache",
    "node_modules",
    "*.egg-info",
)


# --- plumbing -----------------------------------------------------------------------------------


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def use_project_root() -> None:
    here = str(SCRIPT.parent)
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def snapshot_and_reexec(argv: list[str]) -> None:
    """Run from a copy of the tree, so edits made by others during the run don't
    mix two versions of the code into the figures."""
    if "--no-snapshot" in argv or "--in-snapshot" in argv:
        return
    snap = Path(tempfile.mkdtemp(prefix="postkamer-inbox-bench-src-"))
    shutil.copytree(ROOT, snap / "src", ignore=shutil.ignore_patterns(*SNAPSHOT_IGNORE))
    target = snap / "src" / SCRIPT.relative_to(ROOT)
    log(f"code: snapshot of {ROOT} in {snap / 'src'}")
    os.execv(sys.executable, [sys.executable, str(target), *argv, "--in-snapshot", str(snap)])


def pg_url(db: str) -> str:
    return f"postgresql://postgres@{PG_HOST}:{PG_PORT}/{db}"


def database_exists(db: str) -> bool:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        return (
            conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [db]).fetchone()
            is not None
        )


def drop_database(db: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def create_database(db: str) -> None:
    import psycopg

    drop_database(db)
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')


def read_meta(db: str) -> dict | None:
    import psycopg

    if not database_exists(db):
        return None
    with psycopg.connect(pg_url(db), autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass(%s)", [META_TABLE]).fetchone()[0]
        if exists is None:
            return None
        row = conn.execute(f"SELECT value FROM {META_TABLE} WHERE key = 'load'").fetchone()
        return row[0] if row else None


def write_meta(db: str, meta: dict) -> None:
    import psycopg
    from psycopg.types.json import Jsonb

    with psycopg.connect(pg_url(db), autocommit=True) as conn:
        conn.execute(f"CREATE TABLE IF NOT EXISTS {META_TABLE} (key text PRIMARY KEY, value jsonb)")
        conn.execute(
            f"INSERT INTO {META_TABLE} (key, value) VALUES ('load', %s) "
            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            [Jsonb(meta)],
        )


def machine() -> dict:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) // 1024
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_mib": mem,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
    }
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL) as conn:
            for name in ("server_version", "shared_buffers", "work_mem", "effective_cache_size"):
                info[f"pg_{name}"] = conn.execute(f"SHOW {name}").fetchone()[0]
    except Exception as exc:  # the figures still make sense without it
        info["pg_error"] = str(exc)
    return info


# --- COPY helpers ---------------------------------------------------------------------------------


def esc(value: str) -> str:
    """A string in PostgreSQL COPY text format."""
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        value = (
            value.replace("\\", "\\\\")
            .replace("\t", "\\t")
            .replace("\n", "\\n")
            .replace("\r", "\\r")
        )
    return value


def js(value) -> str:
    return esc(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


def ts(epoch: float | None) -> str:
    if epoch is None:
        return "\\N"
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def det_uuid(*parts) -> str:
    """A UUID4-shaped id that depends only on the seed and ``parts``."""
    digest = hashlib.md5(":".join(map(str, (SEED, *parts))).encode()).digest()
    return str(uuid.UUID(bytes=digest, version=4))


class CopyTable:
    """COPY lines for one model, in the column order the generator writes, plus any
    column the generator does not know (added since by a migration) filled with the
    field's default, so a new nullable or defaulted field never breaks the load."""

    def __init__(self, model, columns: list[str]):
        from django.db import connection, models

        self.model = model
        self.table = model._meta.db_table
        fields = {f.column: f for f in model._meta.concrete_fields}
        unknown = [c for c in columns if c not in fields]
        if unknown:
            raise SystemExit(f"{self.table}: the generator writes {unknown}, which the model lacks")
        extra_cols, extra_vals = [], []
        now = datetime.now(UTC).timestamp()
        for column, field in fields.items():
            if column in columns:
                continue
            if field.primary_key and isinstance(field, (models.AutoField, models.BigAutoField)):
                continue  # identity column: the database numbers the rows
            if field.has_default():
                value = field.get_default()
            elif getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
                value = datetime.fromtimestamp(now, UTC)
            elif field.null:
                value = None
            elif field.blank and isinstance(field, (models.CharField, models.TextField)):
                value = ""  # e.g. a stored summary, filled in by a later load phase
            else:
                raise SystemExit(
                    f"{self.table}.{column} is NOT NULL without a default: teach bench/inbox.py "
                    "what to put there"
                )
            extra_cols.append(column)
            extra_vals.append(self._format(field, value, connection))
        self.columns = columns + extra_cols
        self.suffix = ("\t" + "\t".join(extra_vals)) if extra_vals else ""
        self.extra_columns = extra_cols

    @staticmethod
    def _format(field, value, connection) -> str:
        from django.db import models

        if value is None:
            return "\\N"
        if isinstance(field, models.JSONField):
            return js(value)
        if isinstance(field, models.BooleanField):
            return "t" if value else "f"
        if isinstance(value, datetime):
            return value.isoformat()
        return esc(str(field.get_db_prep_save(value, connection)))

    def statement(self) -> str:
        cols = ", ".join(f'"{c}"' for c in self.columns)
        return f'COPY "{self.table}" ({cols}) FROM STDIN'

    def line(self, values) -> str:
        return "\t".join(values) + self.suffix + "\n"


class CopyStream:
    """A COPY into one table on its own connection, fed line by line in chunks."""

    CHUNK = 4000

    def __init__(self, db: str, table: CopyTable):
        import psycopg
        from psycopg.copy import QueuedLibpqWriter

        self.conn = psycopg.connect(pg_url(db))
        prepare_load_session(self.conn)
        self.cursor = self.conn.cursor()
        self.table = table
        self._cm = self.cursor.copy(table.statement(), writer=QueuedLibpqWriter(self.cursor))
        self.copy = self._cm.__enter__()
        self.buffer: list[str] = []
        self.rows = 0

    def add(self, values) -> None:
        self.buffer.append(self.table.line(values))
        if len(self.buffer) >= self.CHUNK:
            self.flush()

    def flush(self) -> None:
        if self.buffer:
            self.copy.write("".join(self.buffer))
            self.rows += len(self.buffer)
            self.buffer = []

    def close(self) -> int:
        self.flush()
        self._cm.__exit__(None, None, None)
        self.conn.commit()
        self.conn.close()
        return self.rows


def prepare_load_session(conn) -> None:
    # FK triggers off for this session (superuser): every id is generated here and
    # the references are checked after the load (check_references).
    conn.execute("SET session_replication_role = replica")
    conn.execute("SET synchronous_commit = off")
    conn.execute("SET maintenance_work_mem = '512MB'")


# --- the data -------------------------------------------------------------------------------------

WORDS = (  # noqa: SIM905
    "the of and to in is that for it as was with be by on not this are or from at we you your our "
    "order invoice refund payment account password login delivery shipping package tracking number "
    "subscription plan renewal seats price quote discount contract signed copy attached please "
    "thanks thank regards kind hello hi dear team support sales billing question issue problem error "
    "page button export import report dashboard settings user users admin access permission "
    "since yesterday morning today tomorrow week month last next still again already soon could "
    "would should can cannot does did have has had been will make sure check see find help need "
    "want know understand update updated change changed new old wrong right correct missing "
    "received sent email mail address phone call meeting schedule available time date customer "
    "product item size colour color return exchange replacement damaged broken working works fine "
    "server down slow fast app mobile browser chrome firefox windows mac version release note "
    "credit card bank transfer iban vat number company name street city postcode country "
    "café Grüße déjà façade naïve señor Łódź Kraków smørrebrød spasibo arigatou"
).split()
FIRST = (  # noqa: SIM905
    "Anna Bram Carla Daan Eva Finn Greta Hugo Iris Jan Kim Lars Mila Noah Olga Piet Quinn Rosa "
    "Sven Tess Umar Vera Wim Xena Yara Zoë Jürgen Sören José Łukasz Chloé Renée François Ömer "
    "Ágnes Siobhán Maria Lucas Sofia Liam Emma Mohammed Fatima Wei Yuki Priya Arjun Ana Pedro"
).split()
LAST = (  # noqa: SIM905
    "Jansen Smit Visser Bakker Meijer Mulder Bos Vos Peters Hendriks Müller Schäfer Groß Dvořák "
    "Nowak Wójcik García Peña Øster Lindqvist Åberg O'Brien Mäkinen Köhler Brontë Rossi Dubois "
    "Silva Kowalski Tanaka Chen Kumar Novak Horvat Popescu Nielsen Andersen Fischer Weber"
).split()
COMPANY = (  # noqa: SIM905
    "acme globex initech umbrella hooli vandelay stark wayne wonka tyrell cyberdyne soylent "
    "aperture blackmesa oceanic dunder monarch nakatomi gringotts sirius"
).split()
TLDS = ("com", "nl", "de", "co.uk", "fr", "es", "io", "be", "pl", "se")
SUBJECTS = (
    "Question about my order {n}",
    "Invoice {n} is wrong",
    "Cannot log in",
    "Refund request for order {n}",
    "Delivery delayed",
    "Vraag over factuur {n}",
    "Problem mit der Lieferung {n}",
    "Subscription renewal",
    "Urgent: dashboard down since this morning",
    "Feature request: export to CSV",
    "Wrong size, need an exchange",
    "Password reset does not arrive",
    "Pricing for {n} seats",
    "Contract {n}: signed copy",
    "Réclamation commande {n}",
    "Change of billing address",
    "VAT number on invoice {n}",
    "Damaged package",
    "How do I add users?",
    "Cancel my subscription",
)
ATTACHMENTS = (
    ("application/pdf", "invoice", "pdf"),
    ("application/pdf", "contract", "pdf"),
    ("image/png", "screenshot", "png"),
    ("image/jpeg", "photo", "jpg"),
    ("text/csv", "export", "csv"),
)


class Conv:
    __slots__ = (
        "i",
        "id",
        "inbox",
        "t0",
        "times",
        "outbound",
        "status",
        "assignee",
        "customer",
        "subject",
        "closed_at",
        "order",
    )


def paragraph_pool(rng: random.Random, count: int = 3000) -> list[str]:
    pool = []
    for _ in range(count):
        sentences = []
        for _ in range(rng.randint(2, 6)):
            words = [rng.choice(WORDS) for _ in range(rng.randint(6, 18))]
            words[0] = words[0].capitalize()
            sentences.append(" ".join(words) + rng.choice(".....?!"))
        pool.append(" ".join(sentences))
    return pool


def message_counts(rng: random.Random, n: int, total: int, pinned: dict[int, int]) -> list[int]:
    """Lognormal counts (median ~6.5), exactly ``total`` in all, pinned ones fixed."""
    sigma = 0.9
    mean = total / n
    mu = math.log(mean) - sigma * sigma / 2
    counts = [min(120, max(1, round(rng.lognormvariate(mu, sigma)))) for _ in range(n)]
    for i, value in pinned.items():
        counts[i] = value
    free = [i for i in range(n) if i not in pinned]
    diff = total - sum(counts)
    while diff != 0 and free:
        i = free[rng.randrange(len(free))]
        if diff > 0 and counts[i] < 120:
            step = min(diff, rng.randint(1, 4), 120 - counts[i])
            counts[i] += step
            diff -= step
        elif diff < 0 and counts[i] > 1 and counts[i] != 50:
            step = min(-diff, rng.randint(1, 4), counts[i] - 1)
            counts[i] -= step
            diff += step
    return counts


def plan_conversations(n: int, total_messages: int) -> tuple[list[Conv], list[tuple], dict]:
    """Every conversation's shape: inbox, times, directions, status, assignee."""
    rng = random.Random(SEED)
    starts = sorted(START_TS + rng.random() * SPAN_SECONDS for _ in range(n))
    # Pinned lengths: exactly 50 (the "open a conversation" case) spread over time,
    # and some longer ones (50+).
    fifty = {int((k + 0.5) * n / FIFTY) for k in range(FIFTY)} if n >= FIFTY * 10 else set()
    pinned = {i: 50 for i in fifty}
    for k in range(LONG if n >= 1000 else 0):
        i = int((k + 0.25) * n / LONG)
        if i not in pinned:
            pinned[i] = rng.randint(60, 120)
    counts = message_counts(rng, n, total_messages, pinned)

    customers = []
    for c in range(max(1000, n // 3)):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        company = f"{rng.choice(COMPANY)}{c % 97}.{rng.choice(TLDS)}"
        local = f"{first}.{last}".lower().replace("'", "")
        local = local.encode("ascii", "ignore").decode() or f"user{c}"
        customers.append((f"{first} {last}", f"{local}{c}@{company}"))

    inbox_weights = [share for _, share, _ in INBOXES]
    agent_weights = [1 / math.sqrt(a + 1) for a in range(AGENTS)]
    convs = []
    for i in range(n):
        c = Conv()
        c.i = i
        c.id = det_uuid("c", i)
        c.inbox = rng.choices(range(len(INBOXES)), inbox_weights)[0]
        c.t0 = starts[i]
        count = counts[i]
        # Replies come hours to days apart; a long thread runs for weeks.
        gaps = [rng.expovariate(1 / (3 * 3600)) + 60 for _ in range(count - 1)]
        times = [c.t0]
        for gap in gaps:
            times.append(times[-1] + gap)
        if times[-1] > END_TS - 60:  # squeeze a thread that would run past the end
            scale = (END_TS - 60 - c.t0) / max(times[-1] - c.t0, 1)
            times = [c.t0 + (t - c.t0) * scale for t in times]
        c.times = times
        outbound = [False]
        for _k in range(1, count):
            outbound.append(rng.random() < (0.75 if not outbound[-1] else 0.25))
        c.outbound = outbound
        recent = END_TS - times[-1] < 30 * 86400
        c.status = "open" if rng.random() < (0.8 if recent else 0.27) else "closed"
        if c.status == "closed":
            c.closed_at = times[-1] + rng.uniform(60, 2 * 86400)
            c.closed_at = min(c.closed_at, END_TS)
            assigned = rng.random() < 0.95
        else:
            c.closed_at = None
            assigned = rng.random() < 0.6
        if assigned:
            pool = range(TEAM_SIZE) if INBOXES[c.inbox][2] else range(AGENTS)
            c.assignee = rng.choices(list(pool), [agent_weights[a] for a in pool])[0]
        else:
            c.assignee = None
        c.customer = rng.randrange(len(customers))
        c.order = 1_000_000 + rng.randrange(9_000_000)
        c.subject = rng.choice(SUBJECTS).format(n=c.order)
        convs.append(c)
    info = {
        "fifty": sorted(fifty),
        "long": sorted(i for i, v in pinned.items() if v != 50),
        "max_messages": max(counts),
    }
    return convs, customers, info


def load(db: str, n: int, total_messages: int) -> dict:
    """Create, migrate and fill the database; returns the meta written into it."""
    import psycopg
    from django.core.management import call_command
    from django.db import connection, transaction

    from accounts.models import Account, Team, User
    from conversations.models import (
        Conversation,
        ConversationEvent,
        ConversationMessage,
        Note,
        ReadState,
        RoutingRule,
    )
    from inboxes.models import Attachment, Inbox, Mailbox, Message

    phases: dict[str, float] = {}
    started = time.perf_counter()
    mark = started

    def phase(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        phases[name] = round(now - mark, 1)
        mark = now
        log(f"  {name}: {phases[name]:.1f} s")

    log(
        f"load: {n:,} conversations, {total_messages:,} messages into {db} "
        f"(load average {os.getloadavg()[0]:.1f})"
    )
    phases["load average at the start"] = round(os.getloadavg()[0], 1)
    create_database(db)
    call_command("migrate", interactive=False, verbosity=0)
    phase("create database + migrate")

    # Account, people, inboxes: a handful of rows through the ORM.
    rng = random.Random(SEED + 1)
    with transaction.atomic():
        account = Account.objects.create(name="Inbox Bench Co", plan="professional")
        admin = User.objects.create_user(
            f"admin@{DOMAIN}",
            password="bench-admin-password",
            account=account,
            full_name="Bench Admin",
            role="admin",
        )
        agents = []
        for a in range(AGENTS):
            agents.append(
                User.objects.create_user(
                    f"agent{a:02d}@{DOMAIN}",
                    password="bench-agent-password",
                    account=account,
                    full_name=f"{rng.choice(FIRST)} {rng.choice(LAST)}",
                    role="member",
                )
            )
        team = Team.objects.create(account=account, name="Billing team")
        team.members.set(agents[:TEAM_SIZE])
        inboxes = []
        for name, _share, restricted in INBOXES:
            address = f"{name.lower()}@{DOMAIN}"
            mailbox = Mailbox.objects.create(
                account=account,
                address=address,
                canonical_address=address,
                kind="team",
                provider="imap",
                imap_host=f"imap.{DOMAIN}",
                imap_port=993,
                imap_security="ssl",
                imap_username=address,
                smtp_host=f"smtp.{DOMAIN}",
                smtp_port=465,
                smtp_security="ssl",
                smtp_username=address,
                status="connected",
                sync_state="idle",
                connected_by=admin,
            )
            inbox = Inbox.objects.create(
                account=account,
                name=name,
                mailbox=mailbox,
                from_name=f"{name} at Inbox Bench",
                restricted=restricted,
            )
            if restricted:
                inbox.visible_to_teams.add(team)
            rule = RoutingRule.objects.create(inbox=inbox, mode="round_robin")
            rule.users.set(agents[:TEAM_SIZE] if restricted else agents)
            inboxes.append(inbox)
    account_id = str(account.pk)
    agent_ids = [str(a.pk) for a in agents]
    inbox_ids = [str(i.pk) for i in inboxes]
    inbox_addresses = [i.mailbox.address for i in inboxes]
    inbox_from = [i.from_name for i in inboxes]
    agent_names = [a.full_name for a in agents]

    convs, customers, info = plan_conversations(n, total_messages)
    phase("plan")
    summary_backfill = None
    if any(f.name == "snippet" for f in Conversation._meta.get_fields()):
        import importlib

        summary_backfill = importlib.import_module(
            "conversations.migrations.0006_conversation_summary_and_nav_counts"
        )

    big_tables = [
        Message._meta.db_table,
        ConversationMessage._meta.db_table,
        ReadState._meta.db_table,
        ConversationEvent._meta.db_table,
        Attachment._meta.db_table,
        Conversation._meta.db_table,
    ]
    with psycopg.connect(pg_url(db), autocommit=True) as admin_conn:
        dropped = admin_conn.execute(
            """
            SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)
            FROM pg_index i
            WHERE i.indrelid = ANY(%s::regclass[]) AND NOT i.indisprimary
              AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)
            """,
            [big_tables],
        ).fetchall()
        for name, _definition in dropped:
            admin_conn.execute(f"DROP INDEX {name}")
    phase(f"drop {len(dropped)} secondary indexes")

    # Conversations (with their final counters), in arrival order.
    conv_table = CopyTable(
        Conversation,
        [
            "id",
            "created_at",
            "updated_at",
            "account_id",
            "inbox_id",
            "subject",
            "status",
            "assignee_id",
            "customer_address",
            "last_message_at",
            "message_count",
            "first_response_at",
            "closed_at",
        ],
    )
    stream = CopyStream(db, conv_table)
    for c in convs:
        first_out = next((t for t, out in zip(c.times, c.outbound, strict=True) if out), None)
        stream.add(
            (
                c.id,
                ts(c.t0),
                ts(c.closed_at or c.times[-1]),
                account_id,
                inbox_ids[c.inbox],
                esc(c.subject),
                c.status,
                agent_ids[c.assignee] if c.assignee is not None else "\\N",
                esc(customers[c.customer][1]),
                ts(c.times[-1]),
                str(len(c.times)),
                ts(first_out),
                ts(c.closed_at),
            )
        )
    stream.close()
    phase("conversations")

    # Messages and their thread links, in sent order across all conversations (as
    # a live inbox receives them), on two connections at once.
    message_table = CopyTable(
        Message,
        [
            "id",
            "created_at",
            "updated_at",
            "account_id",
            "dedupe_key",
            "direction",
            "message_id",
            "in_reply_to",
            "references",
            "thread_root",
            "subject",
            "from_name",
            "from_address",
            "to",
            "cc",
            "sent_at",
            "text",
            "html",
            "has_remote_images",
            "headers",
            "raw",
            "raw_size",
            "parse_error",
        ],
    )
    link_table = CopyTable(
        ConversationMessage, ["created_at", "inbox_id", "conversation_id", "message_id"]
    )
    attachment_table = CopyTable(
        Attachment,
        [
            "id",
            "created_at",
            "updated_at",
            "message_id",
            "filename",
            "content_type",
            "size",
            "content_id",
            "inline",
            "file",
        ],
    )
    mrng = random.Random(SEED + 2)
    pool = paragraph_pool(mrng)
    pool_html = ["<p>" + p.replace("&", "&amp;").replace("<", "&lt;") + "</p>" for p in pool]
    messages = CopyStream(db, message_table)
    links = CopyStream(db, link_table)
    attachments: list[tuple] = []
    heap = [(c.times[0], c.i, 0) for c in convs]
    heapq.heapify(heap)
    emitted = 0
    text_bytes = 0
    every = max(total_messages // 10, 1)
    while heap:
        sent, ci, k = heapq.heappop(heap)
        c = convs[ci]
        if k + 1 < len(c.times):
            heapq.heappush(heap, (c.times[k + 1], ci, k + 1))
        mid = det_uuid("m", ci, k)
        out = c.outbound[k]
        name, address = customers[c.customer]
        team_address = inbox_addresses[c.inbox]
        if out:
            who = agent_names[c.assignee] if c.assignee is not None else inbox_from[c.inbox]
            sender_name, sender = inbox_from[c.inbox], team_address
            to = [{"name": name, "address": address}]
            greeting = f"Hello {name.split()[0]},"
            closing = f"Kind regards,\\n{who}\\n{inbox_from[c.inbox]}"
        else:
            sender_name, sender = name, address
            to = [{"name": inbox_from[c.inbox], "address": team_address}]
            greeting = "Hello,"
            closing = f"Thanks,\\n{name}"
        cc = (
            [{"name": "", "address": f"colleague{ci % 50}@{address.split('@')[1]}"}]
            if mrng.random() < 0.1
            else []
        )
        target = mrng.randint(1000, 3000)
        parts, size = [], 0
        while size < target:
            p = mrng.randrange(len(pool))
            parts.append(p)
            size += len(pool[p]) + 2
        body = "\\n\\n".join(pool[p] for p in parts)
        if k == 0:
            body = f"Order reference: PK{c.order}\\n\\n" + body
        text = f"{greeting}\\n\\n{body}\\n\\n{closing}"
        html = ""
        remote = False
        if mrng.random() < 0.4:
            remote = mrng.random() < 0.1
            html = "<div>" + "".join(pool_html[p] for p in parts) + "</div>"
        msg_id = f"<{ci}.{k}.{mid[:8]}@{DOMAIN if out else address.split('@')[1]}>"
        refs = [f"<{ci}.{j}.{det_uuid('m', ci, j)[:8]}@x>" for j in range(max(0, k - 10), k)]
        subject = c.subject if k == 0 else "Re: " + c.subject
        when = ts(sent)
        messages.add(
            (
                mid,
                when,
                when,
                account_id,
                hashlib.sha256(f"{SEED}:{ci}:{k}".encode()).hexdigest(),
                "outbound" if out else "inbound",
                esc(msg_id),
                esc(refs[-1]) if refs else "",
                js(refs),
                "",
                esc(subject),
                esc(sender_name),
                esc(sender),
                js(to),
                js(cc),
                when,
                text,
                html,
                "t" if remote else "f",
                "{}",
                "",
                str(len(text) + len(html) + 3000),
                "",
            )
        )
        links.add((when, inbox_ids[c.inbox], c.id, mid))
        text_bytes += len(text) + len(html)
        if mrng.random() < 0.08:
            for a in range(mrng.randint(1, 2)):
                ctype, stem, ext = ATTACHMENTS[mrng.randrange(len(ATTACHMENTS))]
                aid = det_uuid("a", ci, k, a)
                attachments.append(
                    (
                        aid,
                        when,
                        when,
                        mid,
                        f"{stem}-{c.order}.{ext}",
                        ctype,
                        str(mrng.randint(20_000, 900_000)),
                        "",
                        "f",
                        f"attachments/{when[:4]}/{when[5:7]}/{when[8:10]}/{aid}.{ext}",
                    )
                )
        emitted += 1
        if emitted % every == 0:
            log(f"  messages: {emitted:,} / {total_messages:,}")
    message_rows = messages.close()
    link_rows = links.close()
    phase("messages + conversation links")
    stream = CopyStream(db, attachment_table)
    for row in attachments:
        stream.add(row)
    attachment_rows = stream.close()

    # Events (assigned, closed), notes, read states.
    erng = random.Random(SEED + 3)
    event_table = CopyTable(
        ConversationEvent,
        ["conversation_id", "kind", "actor_id", "assignee_id", "detail", "created_at"],
    )
    note_table = CopyTable(
        Note, ["id", "created_at", "updated_at", "conversation_id", "author_id", "text"]
    )
    read_table = CopyTable(ReadState, ["conversation_id", "user_id", "read_at"])
    events = CopyStream(db, event_table)
    reads = CopyStream(db, read_table)
    notes: list[tuple] = []
    # Agents 0-4 also read a share of conversations they are not assigned to.
    browse = {0: 0.35, 1: 0.2, 2: 0.15, 3: 0.1, 4: 0.05}
    for c in convs:
        if c.assignee is not None:
            at = c.t0 + 30 + erng.random() * 600
            events.add(
                (
                    c.id,
                    "assigned",
                    "\\N",
                    agent_ids[c.assignee],
                    js({"reason": "round-robin", "rule": INBOXES[c.inbox][0]}),
                    ts(at),
                )
            )
        if c.status == "closed":
            actor = agent_ids[c.assignee] if c.assignee is not None else agent_ids[0]
            events.add((c.id, "closed", actor, "\\N", "{}", ts(c.closed_at)))
        readers = {}
        if c.assignee is not None:
            # Assignees have read all of a closed one; an open one half the time.
            last = c.times[-1]
            if c.status == "closed" or erng.random() < 0.5:
                readers[c.assignee] = c.closed_at or last + erng.uniform(60, 7200)
            else:
                readers[c.assignee] = c.times[max(0, len(c.times) - 2)]
        for agent, share in browse.items():
            if agent not in readers and erng.random() < share:
                if INBOXES[c.inbox][2] and agent >= TEAM_SIZE:
                    continue
                readers[agent] = c.times[erng.randrange(len(c.times))] + erng.uniform(60, 3600)
        for agent, when in readers.items():
            reads.add((c.id, agent_ids[agent], ts(min(when, END_TS))))
        if erng.random() < 0.04:
            for j in range(erng.randint(1, 3)):
                author = c.assignee if c.assignee is not None else erng.randrange(AGENTS)
                when = ts(c.t0 + (c.times[-1] - c.t0) * erng.random() + 30)
                notes.append(
                    (
                        det_uuid("n", c.i, j),
                        when,
                        when,
                        c.id,
                        agent_ids[author],
                        esc(" ".join(erng.choice(WORDS) for _ in range(erng.randint(8, 40)))),
                    )
                )
    event_rows = events.close()
    read_rows = reads.close()
    stream = CopyStream(db, note_table)
    for row in notes:
        stream.add(row)
    note_rows = stream.close()
    phase("events, read states, notes, attachments")

    if summary_backfill is not None:
        # The list's stored customer name and snippet, by the migration's own rule.
        with psycopg.connect(pg_url(db), autocommit=True) as admin_conn:
            admin_conn.execute("SET work_mem = '256MB'")
            admin_conn.execute(
                summary_backfill.BACKFILL_POSTGRESQL,
                {
                    "chars": summary_backfill.SNIPPET_SOURCE_CHARS,
                    "whitespace": summary_backfill.PG_WHITESPACE_RUN,
                },
            )
        phase("conversations' customer name and snippet")

    with psycopg.connect(pg_url(db), autocommit=True) as admin_conn:
        admin_conn.execute("SET maintenance_work_mem = '512MB'")
        for _name, definition in dropped:
            admin_conn.execute(definition)
        phase(f"rebuild {len(dropped)} indexes")
        # The references the disabled FK triggers did not check.
        problems = admin_conn.execute(
            f"""
            SELECT
              (SELECT count(*) FROM {link_table.table} l
                 LEFT JOIN {message_table.table} m ON m.id = l.message_id WHERE m.id IS NULL),
              (SELECT count(*) FROM {link_table.table} l
                 LEFT JOIN {conv_table.table} c ON c.id = l.conversation_id WHERE c.id IS NULL),
              (SELECT count(*) FROM {read_table.table} r
                 LEFT JOIN {conv_table.table} c ON c.id = r.conversation_id WHERE c.id IS NULL),
              (SELECT count(*) FROM {attachment_table.table} a
                 LEFT JOIN {message_table.table} m ON m.id = a.message_id WHERE m.id IS NULL),
              (SELECT count(*) FROM {conv_table.table} c
                 WHERE c.message_count <> (SELECT count(*) FROM {link_table.table} l
                                           WHERE l.conversation_id = c.id))
            """
        ).fetchone()
        if any(problems):
            raise SystemExit(f"load: broken references or counters {problems}")
        phase("check references and message_count")
        admin_conn.execute("VACUUM (ANALYZE)")
        phase("VACUUM ANALYZE")
        size = admin_conn.execute(
            "SELECT pg_size_pretty(pg_database_size(current_database()))"
        ).fetchone()[0]
    connection.close()

    load_seconds = round(time.perf_counter() - started, 1)
    phases["load average at the end"] = round(os.getloadavg()[0], 1)
    rows = {
        "conversations": len(convs),
        "messages": message_rows,
        "conversation_links": link_rows,
        "attachments": attachment_rows,
        "events": event_rows,
        "read_states": read_rows,
        "notes": note_rows,
    }
    fifty_ids = [convs[i].id for i in info["fifty"]]
    # Search terms: a common word (the first 51 hits come quickly), a customer's
    # company domain (some dozens of conversations), and an order number that
    # occurs in one old first message only (a full scan).
    old = convs[len(convs) // 50]
    domain = customers[convs[-7].customer][1].split("@")[1]
    meta = {
        "version": LOAD_VERSION,
        "complete": True,
        "seed": SEED,
        "conversations": n,
        "messages_requested": total_messages,
        "rows": rows,
        "text_mib": round(text_bytes / 2**20),
        "database_size": size,
        "load_seconds": load_seconds,
        "phases": phases,
        "loaded_at": time.strftime("%Y-%m-%d %H:%M %Z"),
        "account": account_id,
        "agent": f"agent00@{DOMAIN}",
        "admin": f"admin@{DOMAIN}",
        "agent_ids": agent_ids,
        "inbox_ids": dict(zip([name for name, _, _ in INBOXES], inbox_ids, strict=True)),
        "fifty": fifty_ids,
        "max_messages": info["max_messages"],
        "status_counts": {
            "open": sum(1 for c in convs if c.status == "open"),
            "closed": sum(1 for c in convs if c.status == "closed"),
            "open_unassigned": sum(1 for c in convs if c.status == "open" and c.assignee is None),
            "agent0_open": sum(1 for c in convs if c.status == "open" and c.assignee == 0),
        },
        "search": {
            "common word": "refund",
            "customer domain": domain,
            "rare order number": f"PK{old.order}",
        },
        "extra_columns_defaulted": {
            t.table: t.extra_columns
            for t in (conv_table, message_table, link_table, event_table, read_table, note_table)
            if t.extra_columns
        },
    }
    write_meta(db, meta)
    log(f"load: done in {load_seconds:.0f} s ({size}); rows {rows}")
    return meta


# --- measuring ------------------------------------------------------------------------------------


class Case:
    def __init__(
        self,
        group: str,
        name: str,
        client,
        url: str,
        *,
        target: float | None,
        headers: dict | None = None,
        status: int = 200,
    ):
        self.group = group  # api-list, page-list, search, api-detail, page-detail, selector, other
        self.name = name
        self.client = client
        self.url = url
        self.target = target
        self.headers = headers or {}
        self.expect = status
        self.times: list[float] = []
        self.cpu: list[float] = []  # this process's CPU per request (Python side)
        self.load: tuple[float, float] = (0.0, 0.0)  # 1-minute load average before/after
        self.queries: list[tuple[float, str]] = []
        self.size = 0
        self.func = None  # selector cases call a function instead of a URL
        self.template = None  # detail cases: the URL with {cid} for the conversation id

    def run(self):
        if self.func is not None:
            return self.func()
        response = self.client.get(self.url, **self.headers)
        if response.status_code != self.expect:
            raise RuntimeError(f"{self.name}: GET {self.url} answered {response.status_code}")
        self.size = len(response.content)
        return response

    def summary(self) -> dict:
        data = sorted(self.times)
        p95 = (
            statistics.quantiles(data, n=100, method="inclusive")[94] if len(data) > 1 else data[0]
        )
        out = {
            "group": self.group,
            "name": self.name,
            "url": self.url,
            "n": len(data),
            "p50_ms": round(statistics.median(data), 1),
            "p95_ms": round(p95, 1),
            "mean_ms": round(statistics.fmean(data), 1),
            "max_ms": round(data[-1], 1),
            "queries": len(self.queries),
            "sql_ms": round(sum(t for t, _ in self.queries), 1),
            "cpu_p50_ms": round(statistics.median(self.cpu), 1) if self.cpu else None,
            "load_avg": [round(x, 1) for x in self.load],
            "bytes": self.size,
            "target_ms": self.target,
        }
        out["met"] = None if self.target is None else out["p95_ms"] < self.target
        return out


HX = {"HTTP_HX_REQUEST": "true"}


def walk_urls(patterns, prefix=""):
    from django.urls import URLPattern, URLResolver

    for p in patterns:
        if isinstance(p, URLResolver):
            yield from walk_urls(p.url_patterns, prefix + str(p.pattern))
        elif isinstance(p, URLPattern):
            yield prefix + str(p.pattern), p


def inbox_routes() -> dict[str, str]:
    """The web routes under /inbox/ (the three-pane page), by URL name."""
    from django.urls import get_resolver

    return {
        pattern.name or route: route
        for route, pattern in walk_urls(get_resolver().url_patterns)
        if route.startswith("inbox")
    }


def build_page_cases(web, meta, args) -> tuple[list[Case], list[str]]:
    """The inbox page's cases, from the URL names conversations/inbox_views.py
    defines (inbox, inbox-list, inbox-conversation, inbox-thread), or --page."""
    from django.urls import reverse

    inbox_id = meta["inbox_ids"]["Support"]
    cases: list[Case] = []
    if args.page:
        for spec in args.page:
            name, _, url = spec.partition("=")
            group = "page-detail" if "{cid}" in url else "page-list"
            case = Case(
                group,
                name,
                web,
                url.replace("{inbox}", inbox_id),
                target=DETAIL_TARGET_MS if group == "page-detail" else LIST_TARGET_MS,
                headers=HX if "fragment" in name else None,
            )
            case.template = case.url if "{cid}" in url else None
            cases.append(case)
        return cases, ["page cases given with --page"]

    routes = inbox_routes()
    if not routes:
        return [], ["no route under /inbox/ in this snapshot: the inbox page is not built yet"]
    notes = ["inbox routes: " + ", ".join(f"/{r} ({n})" for n, r in routes.items())]
    views = [("", "default (unassigned)"), ("view=mine", "mine"), ("view=open", "open")]
    views += [("view=closed", "closed"), (f"inbox={inbox_id}", "inbox=Support (open)")]
    if "inbox" in routes:
        base = reverse("inbox")
        for query, label in views:
            url = f"{base}?{query}" if query else base
            cases.append(Case("page-list", f"page {label}", web, url, target=LIST_TARGET_MS))
    if "inbox-list" in routes:
        base = reverse("inbox-list")
        for query, label in views:
            url = f"{base}?{query}" if query else base
            cases.append(
                Case("page-list", f"fragment {label}", web, url, target=LIST_TARGET_MS, headers=HX)
            )
        # The page's deep page: "Show more" appends the next page after a keyset
        # cursor; the 10th one (rows 501-550), found by following the links.
        try:
            url, starts = f"{base}?view=open", []
            for _ in range(SHOW_MORE_DEPTH):
                html = web.get(url, **HX).content.decode()
                more = html.split('<p class="more">', 1)[1]
                url = unescape(more.split('hx-get="', 1)[1].split('"', 1)[0])
                starts.append(url.split("after=", 1)[1].split("&", 1)[0])
            cases.append(
                Case(
                    "page-list",
                    f"fragment view=open, Show more x{SHOW_MORE_DEPTH} "
                    f"(rows {PAGE * SHOW_MORE_DEPTH + 1}-{PAGE * (SHOW_MORE_DEPTH + 1)})",
                    web,
                    url,
                    target=LIST_TARGET_MS,
                    headers=HX,
                )
            )
            html = web.get(f"{base}?view=open", **HX).content.decode()
            version = html.split('data-version="', 1)[1].split('"', 1)[0]
            upto = "".join(f"&upto={start}" for start in starts[:-1])
            cases.append(
                Case(
                    "other",
                    f"fragment poll view=open, {SHOW_MORE_DEPTH - 1} pages appended, "
                    "unchanged (204)",
                    web,
                    f"{base}?view=open&v={version}{upto}",
                    target=None,
                    headers=HX,
                    status=204,
                )
            )
        except IndexError:
            notes.append("no keyset 'Show more' link in the list fragment: deep page not measured")
        try:
            html = web.get(base, **HX).content.decode()
            marker = 'data-version="'
            version = html.split(marker, 1)[1].split('"', 1)[0]
            cases.append(
                Case(
                    "other",
                    "fragment poll, unchanged (204)",
                    web,
                    f"{base}?v={version}",
                    target=None,
                    headers=HX,
                    status=204,
                )
            )
        except (IndexError, ValueError):
            notes.append("no data-version in the list fragment: poll not measured")
        for label, term in meta["search"].items():
            cases.append(
                Case(
                    "search",
                    f"fragment ?q= {label}",
                    web,
                    f"{base}?q={term}",
                    target=None,
                    headers=HX,
                )
            )
    if "inbox-conversation" in routes:
        url = reverse("inbox-conversation", args=[meta["fifty"][0]]).replace(
            meta["fifty"][0], "{cid}"
        )
        full = Case(
            "page-detail", "page open 50-message conversation", web, "", target=DETAIL_TARGET_MS
        )
        full.template = url
        pane = Case(
            "page-detail",
            "pane open 50-message conversation (htmx)",
            web,
            "",
            target=DETAIL_TARGET_MS,
            headers={**HX, "HTTP_HX_TARGET": "conversation-pane"},
        )
        pane.template = url
        cases += [full, pane]
    if "inbox-thread" in routes:
        url = reverse("inbox-thread", args=[meta["fifty"][0]]).replace(meta["fifty"][0], "{cid}")
        thread = Case("other", "thread refresh, 50 messages", web, "", target=None, headers=HX)
        thread.template = url
        cases.append(thread)
    # Keep the cases that answer (a page under construction may not yet).
    kept = []
    for case in cases:
        try:
            if case.template:
                case.url = case.template.format(cid=meta["fifty"][0])
            case.run()
            kept.append(case)
        except Exception as exc:
            notes.append(f"dropped {case.name}: {type(exc).__name__}: {exc}")
    return kept, notes


def selector_cases(meta, user) -> list[Case]:
    """What the page will cost in the database: conversation_list(view=...) [:50],
    evaluated and iterated, without templates (used while the page is missing)."""
    from conversations.selectors import conversation_list
    from inboxes.models import Inbox

    inbox = Inbox.objects.get(pk=meta["inbox_ids"]["Support"])
    cases = []
    for label, kwargs in [
        ("selector view=unassigned", {"view": "unassigned"}),
        ("selector view=mine", {"view": "mine"}),
        ("selector view=open", {"view": "open"}),
        ("selector view=closed", {"view": "closed"}),
        ("selector inbox=Support", {"inbox": inbox}),
        ("selector inbox=Support view=open", {"inbox": inbox, "view": "open"}),
    ]:
        case = Case(
            "selector", label, None, f"conversation_list(user, {kwargs})", target=LIST_TARGET_MS
        )

        def func(kwargs=kwargs):
            rows = list(conversation_list(user, **kwargs)[:50])
            # What a template reads from each row.
            return [
                (row.subject, row.inbox.name, row.assignee and row.assignee.full_name, row.is_read)
                for row in rows
            ]

        case.func = func
        cases.append(case)
    return cases


def follow(client, url: str, pages: int) -> str:
    for _ in range(pages):
        response = client.get(url)
        data = response.json()
        if not data.get("next"):
            break
        url = data["next"].replace("http://localhost", "")
    return url


def capture(case: Case) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    timings: list[float] = []

    def timed(execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            timings.append((time.perf_counter() - started) * 1000)

    # CaptureQueriesContext keeps the SQL with its parameters (for EXPLAIN), the
    # wrapper the time in microseconds (the context rounds to milliseconds).
    with CaptureQueriesContext(connection) as ctx, connection.execute_wrapper(timed):
        case.run()
    sqls = [q["sql"] for q in ctx.captured_queries]
    if len(timings) != len(sqls):
        timings = [float(q["time"]) * 1000 for q in ctx.captured_queries]
    case.queries = list(zip(timings, sqls, strict=True))


def explain(sql: str) -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
        return "\n".join(row[0] for row in cursor.fetchall())


def measure(meta: dict, args) -> dict:
    from django.db import connection
    from django.test import Client
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    from accounts.models import User

    agent = User.objects.get(email=meta["agent"])
    admin = User.objects.get(email=meta["admin"])
    token, _ = Token.objects.get_or_create(user=agent)
    admin_token, _ = Token.objects.get_or_create(user=admin)
    api = APIClient(HTTP_HOST="localhost", HTTP_ACCEPT="application/json")
    api.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    api_admin = APIClient(HTTP_HOST="localhost", HTTP_ACCEPT="application/json")
    api_admin.credentials(HTTP_AUTHORIZATION=f"Token {admin_token.key}")
    web = Client(HTTP_HOST="localhost")
    web.force_login(agent)

    base = "/api/v1/conversations/"
    inbox_id = meta["inbox_ids"]["Support"]
    deep = follow(api, base, args.deep_pages)
    deep_open = follow(api, f"{base}?status=open", args.deep_pages)
    fifty = meta["fifty"]
    if not fifty:
        raise SystemExit("no conversation with exactly 50 messages (use --conversations >= 200)")

    cases = [
        Case("api-list", "API first page", api, base, target=LIST_TARGET_MS),
        Case("api-list", f"API page {args.deep_pages} (cursor)", api, deep, target=LIST_TARGET_MS),
        Case(
            "api-list", "API ?inbox=Support", api, f"{base}?inbox={inbox_id}", target=LIST_TARGET_MS
        ),
        Case("api-list", "API ?status=open", api, f"{base}?status=open", target=LIST_TARGET_MS),
        Case(
            "api-list",
            f"API ?status=open page {args.deep_pages}",
            api,
            deep_open,
            target=LIST_TARGET_MS,
        ),
        Case(
            "api-list",
            "API ?assignee=me",
            api,
            f"{base}?assignee={agent.pk}",
            target=LIST_TARGET_MS,
        ),
        Case(
            "api-list",
            "API ?assignee=me&status=open",
            api,
            f"{base}?assignee={agent.pk}&status=open",
            target=LIST_TARGET_MS,
        ),
        Case(
            "api-list",
            "API ?unassigned=true",
            api,
            f"{base}?unassigned=true",
            target=LIST_TARGET_MS,
        ),
        Case(
            "api-list",
            "API ?unassigned=true&status=open",
            api,
            f"{base}?unassigned=true&status=open",
            target=LIST_TARGET_MS,
        ),
        Case("api-list", "API first page (admin)", api_admin, base, target=LIST_TARGET_MS),
    ]
    for label, term in meta["search"].items():
        cases.append(
            Case("search", f"API ?search= {label}", api, f"{base}?search={term}", target=None)
        )
    detail = Case(
        "api-detail", "API open 50-message conversation", api, "", target=DETAIL_TARGET_MS
    )
    detail.template = base + "{cid}/"
    cases.append(detail)

    page_cases, page_notes = build_page_cases(web, meta, args)
    if not any(c.group == "page-list" for c in page_cases):
        page_notes.append(
            "measured the selector the page will use (conversations.selectors.conversation_list "
            "with view=..., first 50 rows, no template) instead"
        )
        page_cases += selector_cases(meta, agent)
    cases += page_cases
    if args.only:
        cases = [c for c in cases if any(word.lower() in c.name.lower() for word in args.only)]
    if args.no_search:
        cases = [c for c in cases if c.group != "search"]
    # Search last: its multi-second parallel scans raise the load for what follows.
    cases.sort(key=lambda c: c.group == "search")

    # Rotate over the 50-message conversations so one hot row doesn't flatter the figure.
    rotation = {"i": 0}

    def next_fifty() -> str:
        rotation["i"] += 1
        return fifty[rotation["i"] % len(fifty)]

    log(
        f"measure: {len(cases)} cases, {args.warmup} warm-up + {args.requests} requests each "
        f"(search: {args.search_requests}); CONN_MAX_AGE={connection.settings_dict['CONN_MAX_AGE']}"
    )
    for note in page_notes:
        log("  page: " + note)
    for case in cases:
        count = args.search_requests if case.group == "search" else args.requests
        warmup = min(args.warmup, 1) if case.group == "search" else args.warmup
        detail_case = case.template is not None
        load_before = os.getloadavg()[0]
        for i in range(warmup + count):
            if detail_case:
                case.url = case.template.format(cid=next_fifty())
            cpu = time.process_time()
            started = time.perf_counter()
            case.run()
            elapsed = (time.perf_counter() - started) * 1000
            cpu = (time.process_time() - cpu) * 1000
            if i >= warmup:
                case.times.append(elapsed)
                case.cpu.append(cpu)
        case.load = (load_before, os.getloadavg()[0])
        capture(case)
        s = case.summary()
        log(
            f"  {case.name:<44} p50 {s['p50_ms']:7.1f}  p95 {s['p95_ms']:7.1f} ms  "
            f"{s['queries']} queries  (python CPU p50 {s['cpu_p50_ms']} ms, load {s['load_avg']})"
        )

    summaries = [c.summary() for c in cases]
    explains = {}
    for group in ("api-list", "page-list", "selector", "search", "api-detail", "page-detail"):
        members = [c for c in cases if c.group == group]
        if not members:
            continue
        worst = max(members, key=lambda c: c.summary()["p95_ms"])
        if not worst.queries:
            continue
        slowest_ms, slowest_sql = max(worst.queries)
        explains[group] = {
            "case": worst.name,
            "query_ms": round(slowest_ms, 1),
            "sql": slowest_sql,
            "plan": explain(slowest_sql)
            if slowest_sql.lstrip().upper().startswith("SELECT")
            else "",
        }
    profile = {}
    if args.profile:
        profile = run_profiles(cases, args)
    tried = experiments(cases) if args.experiments else []
    return {
        "cases": summaries,
        "experiments": tried,
        "explain": explains,
        "page_notes": page_notes,
        "profile": profile,
        "queries": {c.name: [(round(t, 2), sql) for t, sql in c.queries] for c in cases},
    }


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


def wait_idle(threshold: float, limit: float) -> None:
    """Others share this machine (test suites, browsers): wait for a quieter moment."""
    deadline = time.monotonic() + limit
    while os.getloadavg()[0] >= threshold and time.monotonic() < deadline:
        log(
            f"waiting for the 1-minute load average to drop below {threshold} (now {os.getloadavg()[0]:.1f})"
        )
        time.sleep(30)
    log(f"load average now {os.getloadavg()[0]:.1f}")


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
    for label, group, target in (
        ("list", lists, LIST_TARGET_MS),
        ("conversation", details, DETAIL_TARGET_MS),
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


# --- main -----------------------------------------------------------------------------------------


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
    parser.add_argument("--search-requests", type=int, default=5)
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
        drop_database(args.db)
        log(f"dropped {args.db}")
        return 0
    snapshot_and_reexec(argv)
    use_project_root()
    if args.json:
        args.json = str(Path(args.json).resolve())
    # Celery (config/celery.py) puts the working directory first on sys.path: make
    # that the tree being measured.
    os.chdir(ROOT)
    if args.in_snapshot:
        atexit.register(shutil.rmtree, args.in_snapshot, True)
    data_dir = Path(tempfile.mkdtemp(prefix="postkamer-inbox-bench-data-"))
    atexit.register(shutil.rmtree, data_dir, True)
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings_test",
            "DATABASE_URL": f"postgres://postgres@{PG_HOST}:{PG_PORT}/{args.db}",
            "POSTKAMER_DATA_DIR": str(data_dir),
            "HTTPS": "false",
            "LOG_LEVEL": "WARNING",
            "DATABASE_CONN_MAX_AGE": str(args.conn_max_age),
        }
    )
    import django

    # Celery's Django fixup puts the working directory first on sys.path during
    # setup: run it from the measured tree so that tree is what gets imported.
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        django.setup()
    finally:
        os.chdir(cwd)
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
    info = machine()
    connection.close()
    if args.wait_idle:
        wait_idle(args.wait_idle, args.wait_max)
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
