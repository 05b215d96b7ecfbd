"""The scale benchmark's setup: Dovecot with N users and the limits N IDLE
connections need, N team mailboxes in PostgreSQL (bulk, secrets encrypted as the
product stores them), and the product's processes (watchers, workers, beat).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from bench import harness

ADDRESS_DOMAIN = "scale.example.com"
BROKER_DB = 11
# Every user's INBOX gets this UIDVALIDITY (written into its dovecot-uidlist before
# Dovecot first opens it), so one synced mailbox's folder cursor fits them all.
UIDVALIDITY = 1765000000


def user_name(index: int) -> str:
    return f"u{index:05d}"


# --- Dovecot ------------------------------------------------------------------------------


def dovecot_limits(connections: int) -> str:
    """Settings appended to the test Dovecot's config so that ``connections`` IMAP
    sessions (the watchers' IDLEs plus the syncs' own logins) fit on this machine:
    an imap process per session (Dovecot serves only one user per imap process), the
    login processes in "high-performance mode" (each proxies many TLS sessions
    instead of one process per session), and the per-user+IP cap above what a
    watcher takeover briefly holds.

    Beyond 128 imap processes Dovecot runs out of inotify instances (128 per UID by
    default, and every user here is ``nobody``) and then notices new mail in an
    IDLE only by looking every ``mailbox_idle_check_interval`` (30 s by default; 1 s
    here). The benchmark does not raise the kernel's limit
    (/proc/sys/fs/inotify/max_user_instances): it prints what it is."""
    processes = connections + 100
    clients = max(2000, 3 * connections)
    return f"""
# --- bench/scale_setup.py: room for {connections} IMAP sessions
default_process_limit = {processes}
default_client_limit = {clients}
mail_max_userip_connections = 100
mailbox_idle_check_interval = 1 secs
service imap {{
  process_limit = {processes}
}}
service imap-login {{
  service_count = 0
  process_min_avail = 2
  process_limit = 8
  client_limit = {clients}
}}
service anvil {{
  client_limit = {clients + processes + 100}
}}
service auth {{
  client_limit = {clients + processes + 100}
}}
"""


def inotify_instances() -> str:
    try:
        return Path("/proc/sys/fs/inotify/max_user_instances").read_text().strip()
    except OSError:
        return "?"


def start_dovecot(work: harness.Workdir, connections: int):
    from tests.support.mailservers import DovecotServer

    class ScaleDovecot(DovecotServer):
        def _config(self, cert_path: Path, key_path: Path) -> str:
            return super()._config(cert_path, key_path) + dovecot_limits(connections)

    root = work.root / "dovecot"
    root.mkdir()
    server = ScaleDovecot(root, harness.mail_ca(work))
    server.start()
    return server


def add_users(dovecot, count: int) -> dict[str, str]:
    """``count`` Dovecot users with empty Maildirs; returns user -> password."""
    passwords = {}
    for index in range(count):
        name = user_name(index)
        password = secrets.token_urlsafe(12)
        dovecot.add_user(name, password)
        maildir = harness.prepare_maildir(dovecot, name)
        uidlist = maildir / "dovecot-uidlist"
        uidlist.write_text(f"3 V{UIDVALIDITY} N1 G{uuid.uuid4().hex}\n")
        if os.geteuid() == 0:
            os.chown(uidlist, dovecot.mail_uid, dovecot.mail_gid)
        passwords[name] = password
    return passwords


# --- the product's rows --------------------------------------------------------------------


def create_mailboxes(dovecot, passwords: dict[str, str]) -> dict[str, str]:
    """One account and, per Dovecot user, a team mailbox with its own inbox, in bulk
    (the rows ``mailbox_connect`` writes: servers, secrets encrypted and bound to the
    row, the inbox link). Returns mailbox id -> user name."""
    from django.db import transaction
    from django.utils import timezone

    from inboxes.credentials import encrypt_secrets
    from inboxes.models import Inbox, Mailbox, MailboxKind, MailboxStatus, Provider

    account, admin, first_inbox = harness._account_with_inbox()
    now = timezone.now()
    mailboxes, inboxes, owners = [], [], {}
    for index, (name, password) in enumerate(passwords.items()):
        mailbox_id = uuid.uuid4()
        address = f"{name}@{ADDRESS_DOMAIN}"
        mailboxes.append(
            Mailbox(
                id=mailbox_id,
                account_id=account.pk,
                address=address,
                canonical_address=address,
                kind=MailboxKind.TEAM,
                connected_by=admin,
                provider=Provider.IMAP,
                imap_host=dovecot.host,
                imap_port=dovecot.imaps_port,
                imap_security="ssl",
                imap_username=name,
                # No SMTP server runs: nothing is sent in this benchmark.
                smtp_host="127.0.0.1",
                smtp_port=9,
                smtp_security="starttls",
                smtp_username=name,
                secrets_ciphertext=encrypt_secrets(
                    {"imap_password": password, "smtp_password": password},
                    account_id=account.pk,
                    mailbox_id=mailbox_id,
                ),
                status=MailboxStatus.CONNECTED,
                backfill_days=None,
                team_visibility_acknowledged_at=now,
            )
        )
        if index == 0:
            first_inbox.mailbox_id = mailbox_id
        else:
            inboxes.append(Inbox(account=account, name=f"Scale {index:05d}", mailbox_id=mailbox_id))
        owners[str(mailbox_id)] = name
    with transaction.atomic():
        Mailbox.objects.bulk_create(mailboxes, batch_size=500)
        first_inbox.save(update_fields=["mailbox"])
        Inbox.objects.bulk_create(inboxes, batch_size=500)
    return owners


def recently_synced(seconds: float) -> int:
    """Mailboxes whose last sync ended in the last ``seconds``."""
    from datetime import timedelta

    from django.db import close_old_connections
    from django.utils import timezone

    from inboxes.models import Mailbox

    close_old_connections()
    since = timezone.now() - timedelta(seconds=seconds)
    return Mailbox.objects.filter(last_synced_at__gt=since).count()


MAILBOX_SYNC_FIELDS = (
    "status",
    "sync_state",
    "sync_done",
    "sync_total",
    "last_synced_at",
    "sync_last_error",
    "last_error",
)
FOLDER_FIELDS = (
    "role",
    "name",
    "cursor",
    "backfill_from",
    "server_count",
    "imported_count",
    "resync_count",
    "last_synced_at",
    "last_reconciled_at",
    "missing_count",
    "unparsed_count",
    "alert",
)


def mark_synced(mailbox_ids: list[str]) -> dict:
    """The state after each mailbox's first sync, without N syncs: the first mailbox
    is synced by the product (``mailbox_sync``, in this process), its folders and
    sync fields copied onto the others (their INBOXes share its UIDVALIDITY, and
    are empty too); then a second mailbox is synced for real to check that the copy
    is what a sync leaves (nothing imported, no folder reset)."""
    from django.db import transaction

    from inboxes.models import Mailbox, MailboxFolder
    from inboxes.sync import mailbox_sync

    first, rest = mailbox_ids[0], mailbox_ids[1:]
    started = time.monotonic()
    mailbox_sync(first)
    template = Mailbox.objects.get(pk=first)
    folders = list(MailboxFolder.objects.filter(mailbox_id=first))
    values = {name: getattr(template, name) for name in MAILBOX_SYNC_FIELDS}
    with transaction.atomic():
        Mailbox.objects.filter(pk__in=rest).update(**values)
        MailboxFolder.objects.bulk_create(
            [
                MailboxFolder(
                    mailbox_id=mailbox_id, **{f: getattr(folder, f) for f in FOLDER_FIELDS}
                )
                for mailbox_id in rest
                for folder in folders
            ],
            batch_size=1000,
        )
    check = {"folders": [f"{f.role}:{f.name} {f.cursor}" for f in folders]}
    if rest:
        outcome = mailbox_sync(rest[0])
        resets = MailboxFolder.objects.filter(mailbox_id=rest[0], resync_count__gt=0).count()
        check.update(imported=outcome.imported, resets=resets, ran=outcome.ran)
        if outcome.imported or resets or not outcome.ran:
            raise RuntimeError(f"the copied sync state is not steady: {check}")
    check["seconds"] = round(time.monotonic() - started, 2)
    return check


# --- processes ----------------------------------------------------------------------------


def broker_url() -> str:
    return f"redis://127.0.0.1:6379/{BROKER_DB}"


def flush_broker() -> None:
    import redis

    redis.Redis(host="127.0.0.1", port=6379, db=BROKER_DB).flushdb()


def queue_length(names: tuple[str, ...] = ("sync", "default")) -> int:
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379, db=BROKER_DB)
    return sum(client.llen(name) for name in names)


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path
    started: float = field(default_factory=time.time)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, chars: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-chars:]
        return ""


class Processes:
    """The product's processes, started here in sessions of their own and stopped
    here by their ids (TERM, then KILL of the session)."""

    def __init__(self, work: harness.Workdir, env_extra: dict[str, str]) -> None:
        self.work = work
        self.env = {
            **os.environ,
            **work.env(),
            "CELERY_BROKER_URL": broker_url(),
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            **env_extra,
        }
        self.procs: list[Proc] = []
        self.logs = work.root / "logs"
        self.logs.mkdir(exist_ok=True)

    def start(self, name: str, argv: list[str]) -> Proc:
        log = self.logs / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                argv,
                cwd=harness.ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def worker(self, index: int, concurrency: int) -> Proc:
        celery = str(Path(sys.executable).parent / "celery")
        return self.start(
            f"worker{index}",
            [
                celery,
                "-A",
                "config",
                "worker",
                "-Q",
                "default,sync,send",
                "--concurrency",
                str(concurrency),
                "--pool",
                "prefork",
                "--loglevel",
                "WARNING",
                "-n",
                f"scale{index}@%h",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
        )

    def beat(self) -> Proc:
        celery = str(Path(sys.executable).parent / "celery")
        return self.start(
            "beat",
            [
                celery,
                "-A",
                "config",
                "beat",
                "--loglevel",
                "WARNING",
                "-s",
                str(self.work.root / "beat-schedule"),
                "--pidfile",
                str(self.work.root / "beat.pid"),
            ],
        )

    def watcher(self, index: int, extra: list[str]) -> Proc:
        return self.start(
            f"watcher{index}", [sys.executable, "manage.py", "watch_mailboxes", *extra]
        )

    def kill(self, proc: Proc) -> None:
        """kill -9 of one process (the benchmark's mid-run failure)."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.popen.wait(timeout=10)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            # The session: prefork children, parse helpers.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(timeout=5)


# --- a PostgreSQL of the run's own -----------------------------------------------------------


class PrivatePostgres:
    """A PostgreSQL cluster for this run only, on a free port, with room for the
    connections N mailboxes' watchers may open at once: the machine's shared server
    (max_connections 100) must not run out because of a benchmark. Its settings
    are the shared server's defaults otherwise (fsync and synchronous_commit on)."""

    def __init__(self, max_connections: int) -> None:
        import glob
        import socket
        import tempfile

        versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not versions:
            raise RuntimeError("no /usr/lib/postgresql/*/bin/initdb for --private-pg")
        self.bin = Path(versions[-1]).parent
        self.root = Path(tempfile.mkdtemp(prefix="postkamer-bench-pg-"))
        self.root.chmod(0o755)
        self.data = self.root / "data"
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.max_connections = max_connections

    def _as_postgres(self, *argv: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, *argv], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        import pwd

        self.data.mkdir()
        if os.geteuid() == 0:
            entry = pwd.getpwnam("postgres")
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
            os.chown(self.data, entry.pw_uid, entry.pw_gid)
        self._as_postgres(
            str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
            "-E", "UTF8", "--no-sync",
        )  # fmt: skip
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
            f" -c max_connections={self.max_connections} -c shared_buffers=128MB"
        )
        self._as_postgres(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options,
            "-l", str(self.root / "postgres.log"), "-w", "start",
        )  # fmt: skip
        harness.PG_PORT = self.port
        harness.PG_ADMIN_URL = f"postgresql://postgres@{harness.PG_HOST}:{self.port}/postgres"

    def stop(self) -> None:
        import shutil

        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "stop")
        shutil.rmtree(self.root, ignore_errors=True)
