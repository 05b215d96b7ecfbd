"""Loading the inbox benchmark's database: created and migrated, the account and its
people through the ORM, then the planned conversations (bench/inbox_data.py) with
COPY (bench/inbox_copy.py) on two connections with the FK triggers off, secondary
indexes dropped during the load and rebuilt, references checked, VACUUM ANALYZE.
Each phase is timed; the figures go into the meta table with the load.
"""

from __future__ import annotations

import hashlib
import heapq
import os
import random
import time
from types import SimpleNamespace

from bench import harness
from bench.harness import log
from bench.inbox_copy import CopyStream, CopyTable, esc, js, ts, write_meta
from bench.inbox_data import (
    AGENTS,
    ATTACHMENTS,
    DOMAIN,
    END_TS,
    FIRST,
    INBOXES,
    LAST,
    SEED,
    TEAM_SIZE,
    WORDS,
    det_uuid,
    paragraph_pool,
    plan_conversations,
)

LOAD_VERSION = 3  # bump when the generated data changes


def load(db: str, n: int, total_messages: int) -> dict:
    """Create, migrate and fill the database; returns the meta written into it."""
    from django.core.management import call_command
    from django.db import connection

    from conversations.models import Conversation

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
    harness.create_database(db)
    call_command("migrate", interactive=False, verbosity=0)
    phase("create database + migrate")
    ids = create_people()
    account_id, agent_ids, inbox_ids = ids.account_id, ids.agent_ids, ids.inbox_ids

    convs, customers, info = plan_conversations(n, total_messages)
    phase("plan")
    summary_backfill = None
    if any(f.name == "snippet" for f in Conversation._meta.get_fields()):
        import importlib

        summary_backfill = importlib.import_module(
            "conversations.migrations.0006_conversation_summary_and_nav_counts"
        )
    dropped = drop_secondary_indexes(db)
    phase(f"drop {len(dropped)} secondary indexes")

    conv_table = copy_conversations(db, convs, customers, ids)
    phase("conversations")

    m = copy_messages(db, convs, customers, ids, total_messages)
    message_table, link_table, attachment_table = m.tables
    phase("messages + conversation links")
    attachment_rows = copy_rows(db, attachment_table, m.attachments)

    e = copy_events(db, convs, ids)
    event_table, read_table, note_table = e.tables
    phase("events, read states, notes, attachments")

    size = finish_database(db, dropped, summary_backfill, phase, conv_table, m.tables, e.tables)
    connection.close()

    load_seconds = round(time.perf_counter() - started, 1)
    phases["load average at the end"] = round(os.getloadavg()[0], 1)
    rows = {
        "conversations": len(convs),
        "messages": m.message_rows,
        "conversation_links": m.link_rows,
        "attachments": attachment_rows,
        "events": e.event_rows,
        "read_states": e.read_rows,
        "notes": e.note_rows,
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
        "text_mib": round(m.text_bytes / 2**20),
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


def create_people() -> SimpleNamespace:
    """Account, people, inboxes: a handful of rows through the ORM."""
    from django.db import transaction

    from accounts.models import Account, Team, User
    from conversations.models import RoutingRule
    from inboxes.models import Inbox, Mailbox

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
    return SimpleNamespace(
        account_id=str(account.pk),
        agent_ids=[str(a.pk) for a in agents],
        inbox_ids=[str(i.pk) for i in inboxes],
        inbox_addresses=[i.mailbox.address for i in inboxes],
        inbox_from=[i.from_name for i in inboxes],
        agent_names=[a.full_name for a in agents],
    )


def drop_secondary_indexes(db: str) -> list[tuple[str, str]]:
    """Drop the big tables' secondary indexes for the load; their definitions."""
    import psycopg

    from conversations.models import (
        Conversation,
        ConversationEvent,
        ConversationMessage,
        ReadState,
    )
    from inboxes.models import Attachment, Message

    big_tables = [
        Message._meta.db_table,
        ConversationMessage._meta.db_table,
        ReadState._meta.db_table,
        ConversationEvent._meta.db_table,
        Attachment._meta.db_table,
        Conversation._meta.db_table,
    ]
    with psycopg.connect(harness.pg_url(db), autocommit=True) as admin_conn:
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
    return dropped


def copy_conversations(db: str, convs, customers, ids) -> CopyTable:
    from conversations.models import Conversation

    account_id, agent_ids, inbox_ids = ids.account_id, ids.agent_ids, ids.inbox_ids
    # Conversations (with their final counters), in arrival order.
    conv_table = CopyTable(
        Conversation,
        "id created_at updated_at account_id inbox_id subject status assignee_id customer_address "
        "last_message_at message_count first_response_at closed_at",
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
    return conv_table


def copy_messages(db: str, convs, customers, ids, total_messages: int) -> SimpleNamespace:
    """The messages and their conversation links; the attachment rows are returned
    to be copied after them."""
    from conversations.models import ConversationMessage
    from inboxes.models import Attachment, Message

    account_id, inbox_ids = ids.account_id, ids.inbox_ids
    inbox_addresses, inbox_from, agent_names = ids.inbox_addresses, ids.inbox_from, ids.agent_names
    # Messages and their thread links, in sent order across all conversations (as
    # a live inbox receives them), on two connections at once.
    message_table = CopyTable(
        Message,
        "id created_at updated_at account_id dedupe_key direction message_id in_reply_to "
        "references thread_root subject from_name from_address to cc sent_at text html "
        "has_remote_images headers raw raw_size parse_error",
    )
    link_table = CopyTable(
        ConversationMessage, ["created_at", "inbox_id", "conversation_id", "message_id"]
    )
    attachment_table = CopyTable(
        Attachment,
        "id created_at updated_at message_id filename content_type size content_id inline file",
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
    return SimpleNamespace(
        tables=(message_table, link_table, attachment_table),
        message_rows=messages.close(),
        link_rows=links.close(),
        attachments=attachments,
        text_bytes=text_bytes,
    )


def copy_events(db: str, convs, ids) -> SimpleNamespace:
    """Events (assigned, closed), notes, read states."""
    from conversations.models import ConversationEvent, Note, ReadState

    agent_ids = ids.agent_ids
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
    return SimpleNamespace(
        tables=(event_table, read_table, note_table),
        event_rows=events.close(),
        read_rows=reads.close(),
        note_rows=copy_rows(db, note_table, notes),
    )


def copy_rows(db: str, table: CopyTable, rows: list[tuple]) -> int:
    """A COPY of rows made beforehand; returns how many."""
    stream = CopyStream(db, table)
    for row in rows:
        stream.add(row)
    return stream.close()


def finish_database(db: str, dropped, summary_backfill, phase, conv_table, m_tables, e_tables):
    """The stored summaries, the indexes rebuilt, the references checked, VACUUM
    ANALYZE; returns the database's size."""
    import psycopg

    message_table, link_table, attachment_table = m_tables
    read_table = e_tables[1]
    if summary_backfill is not None:
        # The list's stored customer name and snippet, by the migration's own rule.
        with psycopg.connect(harness.pg_url(db), autocommit=True) as admin_conn:
            admin_conn.execute("SET work_mem = '256MB'")
            admin_conn.execute(
                summary_backfill.BACKFILL_POSTGRESQL,
                {
                    "chars": summary_backfill.SNIPPET_SOURCE_CHARS,
                    "whitespace": summary_backfill.PG_WHITESPACE_RUN,
                },
            )
        phase("conversations' customer name and snippet")

    with psycopg.connect(harness.pg_url(db), autocommit=True) as admin_conn:
        # The search column, as the workers fill it after each stored batch
        # (inboxes/search_index.py), here in one statement while the indexes are off.
        admin_conn.execute(
            f"UPDATE {message_table.table} SET search_vector = message_search_vector("  # noqa: S608
            "subject, from_name, from_address, text, headers)"
        )
        phase("search column")
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
    return size
