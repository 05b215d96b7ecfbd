"""The scale benchmark's instruments: deliveries at a steady rate, the poll that
sees each message become visible, and the readings of the processes (memory,
CPU, who watches which mailbox).
"""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
import threading
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path

from bench import harness

# --- /proc ---------------------------------------------------------------------------------

_PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def parents() -> dict[int, int]:
    """pid -> parent pid of every live process."""
    found = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = Path(f"/proc/{entry.name}/stat").read_text()
            found[int(entry.name)] = int(stat[stat.rfind(")") + 2 :].split()[1])
    return found


def descendants(root: int, tree: dict[int, int] | None = None) -> list[int]:
    """``root`` and every process below it."""
    tree = tree if tree is not None else parents()
    children: dict[int, list[int]] = {}
    for pid, ppid in tree.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def rss_kib(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE_KIB
    except (OSError, IndexError, ValueError):
        return 0


def pss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
                    break
    return total


def threads(pid: int) -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return 0


def tree_cpu(root: int, tree: dict[int, int] | None = None) -> float:
    """CPU seconds of a process, its live descendants and its reaped children."""
    return sum(harness.cpu_seconds(p, reaped_children=True) for p in descendants(root, tree))


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    ticks = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]
    return (sum(fields) - idle) / ticks, sum(fields) / ticks


# --- deliveries ---------------------------------------------------------------------------


@dataclass
class Delivery:
    number: int
    user: str
    mailbox_id: str
    message_id: str  # without the angle brackets
    delivered_at: float = 0.0  # wall clock, when the file was in new/ (or LDA returned)
    visible_at: float | None = None  # when the poll first saw its row
    created_at: float | None = None  # the row's created_at


def compose(run_id: str, number: int, user: str, domain: str) -> tuple[str, bytes]:
    message_id = f"scale-{run_id}-{number}@bench.example.com"
    body = (
        f"From: Customer {number} <customer{number}@customers.example.org>\n"
        f"To: {user}@{domain}\n"
        f"Subject: Scale test {number}: where is my order?\n"
        f"Message-ID: <{message_id}>\n"
        f"Date: {formatdate(localtime=False)}\n"
        "MIME-Version: 1.0\n"
        "Content-Type: text/plain; charset=utf-8\n"
        "\n"
        f"Hello,\n\nmy order {number} has not arrived yet. Could you look into it?\n\n"
        "Thanks,\nA customer\n"
    )
    return message_id, body.encode()


class Deliverer(threading.Thread):
    """Delivers a message to a random mailbox every 1/rate seconds for ``seconds``,
    as an MTA would: a file written to tmp/ and renamed into the user's Maildir new/
    (Postfix's local and virtual delivery; DovecotServer.deliver), or through
    ``dovecot-lda`` (``lda=True``)."""

    def __init__(
        self,
        dovecot,
        users: list[tuple[str, str]],  # (mailbox id, user)
        *,
        rate: float,
        seconds: float,
        run_id: str,
        domain: str,
        seed: int,
        lda: bool,
        on_delivered,
    ) -> None:
        super().__init__(name="deliverer", daemon=True)
        self.dovecot = dovecot
        self.users = users
        self.rate = rate
        self.seconds = seconds
        self.run_id = run_id
        self.domain = domain
        self.random = random.Random(seed)
        self.lda = lda
        self.on_delivered = on_delivered
        self.deliveries: list[Delivery] = []
        self.started_at = 0.0
        self.ended_at = 0.0
        self.late = 0  # deliveries that started more than one interval behind schedule
        self.errors: list[str] = []

    def run(self) -> None:
        count = round(self.rate * self.seconds)
        self.started_at = time.time()
        start = time.monotonic()
        for number in range(count):
            due = start + number / self.rate
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            elif -wait > 1 / self.rate:
                self.late += 1
            mailbox_id, user = self.random.choice(self.users)
            message_id, raw = compose(self.run_id, number, user, self.domain)
            try:
                self._deliver(user, raw)
            except Exception as exc:  # report, keep the rate
                self.errors.append(f"{number}: {exc}")
                continue
            delivery = Delivery(number, user, mailbox_id, message_id, time.time())
            self.deliveries.append(delivery)
            self.on_delivered(delivery)
        self.ended_at = time.time()

    def _deliver(self, user: str, raw: bytes) -> None:
        if not self.lda:
            self.dovecot.deliver(user, raw)
            return
        subprocess.run(
            [
                "/usr/lib/dovecot/dovecot-lda",
                "-c",
                str(self.dovecot.config_path),
                "-d",
                user,
                "-f",
                "customer@customers.example.org",
            ],
            input=raw,
            check=True,
            capture_output=True,
            timeout=30,
        )


class VisibilityPoll(threading.Thread):
    """Polls PostgreSQL every ``interval`` seconds for the rows of the messages
    delivered and not yet seen; a message is visible when its row (stored with its
    conversation in one transaction) is."""

    def __init__(self, db_name: str, interval: float = 0.05) -> None:
        super().__init__(name="visibility", daemon=True)
        self.db_name = db_name
        self.interval = interval
        self.pending: dict[str, Delivery] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.polls = 0

    def add(self, delivery: Delivery) -> None:
        with self.lock:
            self.pending[f"<{delivery.message_id}>"] = delivery
            self.pending[delivery.message_id] = delivery

    def waiting(self) -> int:
        with self.lock:
            return len({id(d) for d in self.pending.values()})

    def run(self) -> None:
        import psycopg

        with psycopg.connect(harness.pg_url(self.db_name), autocommit=True) as conn:
            while not self.stop.is_set():
                with self.lock:
                    keys = list(self.pending)
                if keys:
                    rows = conn.execute(
                        "SELECT message_id, extract(epoch FROM created_at)"
                        " FROM conversations_message WHERE message_id = ANY(%s)",
                        [keys],
                    ).fetchall()
                    now = time.time()
                    with self.lock:
                        for message_id, created in rows:
                            delivery = self.pending.pop(message_id, None)
                            if delivery is None:
                                continue
                            self.pending.pop(f"<{delivery.message_id}>", None)
                            self.pending.pop(delivery.message_id, None)
                            delivery.visible_at = now
                            delivery.created_at = float(created)
                self.polls += 1
                self.stop.wait(self.interval)


# --- who watches what, and what it costs ------------------------------------------------------


@dataclass
class Sample:
    at: float
    load: float
    watchers: dict[str, dict] = field(default_factory=dict)  # name -> rss_kib, threads, held
    dovecot_rss_kib: int = 0
    dovecot_pss_kib: int = 0
    dovecot_processes: int = 0
    watched: int = 0
    queue: int = 0
    db_connections: int = 0


def watch_owners(db_name: str) -> dict[str, int]:
    """watch_owner -> mailboxes whose watch lease holds now."""
    import psycopg

    with psycopg.connect(harness.pg_url(db_name), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT watch_owner, count(*) FROM inboxes_mailbox"
            " WHERE watch_owner <> '' AND watch_lease_until > now() GROUP BY watch_owner"
        ).fetchall()
    return dict(rows)


def owner_pids(db_name: str) -> dict[str, int]:
    """WatcherProcess name -> pid (the leased watcher registers itself)."""
    import psycopg

    with (
        psycopg.connect(harness.pg_url(db_name), autocommit=True) as conn,
        contextlib.suppress(psycopg.Error),
    ):
        return dict(conn.execute("SELECT name, pid FROM inboxes_watcherprocess").fetchall())
    return {}


def db_connections(db_name: str) -> int:
    """Connections to the benchmark's database now (every process's)."""
    import psycopg

    with psycopg.connect(harness.pg_url(db_name), autocommit=True) as conn:
        return conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", [db_name]
        ).fetchone()[0]


def pushed_count(db_name: str) -> int:
    import psycopg

    with psycopg.connect(harness.pg_url(db_name), autocommit=True) as conn:
        return conn.execute(
            "SELECT count(*) FROM inboxes_mailbox WHERE pushed_until > now()"
        ).fetchone()[0]


def owner_of_pid(owners: dict[str, int], pids: dict[str, int], pid: int) -> str | None:
    """The watch_owner a watcher process holds its leases as."""
    for name, owner_pid in pids.items():
        if owner_pid == pid:
            return name
    for name in owners:  # "host:pid:random" without a WatcherProcess row
        if f":{pid}:" in f":{name}:":
            return name
    return None


def dovecot_sessions(dovecot) -> dict[str, int]:
    """user -> IMAP sessions Dovecot holds now (``doveadm who``)."""
    done = subprocess.run(
        ["doveadm", "-c", str(dovecot.config_path), "who", "-1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    sessions: dict[str, int] = {}
    for line in done.stdout.splitlines()[1:]:
        parts = line.split()
        if parts:
            sessions[parts[0]] = sessions.get(parts[0], 0) + 1
    return sessions
