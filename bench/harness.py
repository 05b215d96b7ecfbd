"""What every benchmark shares: the project on sys.path, a snapshot of the code,
environment, database, mail servers, an account with a connected team mailbox,
phase timers and process measurements.

The scripts run with the project root on sys.path (they put it there) and drive
the product through its services, as a worker would. Django is set up only after
the environment below is in place (the settings read it at import).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DB = "postkamer_bench"
PG_HOST = "127.0.0.1"
PG_PORT = 5432
PG_ADMIN_URL = f"postgresql://postgres@{PG_HOST}:{PG_PORT}/postgres"
SNAPSHOT_PREFIX = "postkamer-bench-src-"
TEAM_ADDRESS = "support@bench.example.com"
MAIL_USER = "support"


def use_project_root() -> None:
    """Import the project's packages, not same-named files beside the script."""
    here = str(Path(__file__).resolve().parent)
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


# --- a stable copy of the code -------------------------------------------------------------

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


def snapshot_and_reexec(script: Path, argv: list[str]) -> None:
    """Copy the project's code to a temp dir and run this script from there.

    Others edit the tree while a run takes minutes (a model change half-way
    through breaks the run, and mixes two versions of the code in the figures),
    so a run measures one fixed copy. Returns only if --no-snapshot was given (or
    this is already the copy, or one of its child processes).
    """
    if {"--no-snapshot", "--in-snapshot", "--child", "-h", "--help"} & set(argv):
        return
    snap = Path(tempfile.mkdtemp(prefix=SNAPSHOT_PREFIX))
    shutil.copytree(ROOT, snap / "src", ignore=shutil.ignore_patterns(*SNAPSHOT_IGNORE))
    target = snap / "src" / script.resolve().relative_to(ROOT)
    print(f"code: a snapshot of {ROOT} taken {time.strftime('%H:%M:%S')} in {snap / 'src'}")
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, str(target), *argv, "--in-snapshot", str(snap)])


def remove_snapshot(snapshot: str | None) -> None:
    """Remove the copy ``snapshot_and_reexec`` made (given as --in-snapshot)."""
    if snapshot and Path(snapshot).name.startswith(SNAPSHOT_PREFIX):
        shutil.rmtree(snapshot, ignore_errors=True)


# --- environment ---------------------------------------------------------------------------


def pg_url(db_name: str, scheme: str = "postgresql") -> str:
    return f"{scheme}://postgres@{PG_HOST}:{PG_PORT}/{db_name}"


@dataclass
class Workdir:
    root: Path
    ca_cert: Path | None  # None: no mail servers (no CA made)
    ca_key: Path | None
    data_dir: Path
    db_name: str

    def env(self) -> dict[str, str]:
        env = {
            "DJANGO_SETTINGS_MODULE": "config.settings_test",
            "DATABASE_URL": pg_url(self.db_name, "postgres"),
            "POSTKAMER_DATA_DIR": str(self.data_dir),
            "HTTPS": "false",
            "LOG_LEVEL": "WARNING",
        }
        if self.ca_cert is not None:
            env.update(
                ALLOW_PRIVATE_MAIL_HOSTS="true",
                MAIL_ALLOWED_PORTS="",
                MAIL_TLS_CA_FILE=str(self.ca_cert),
            )
        return env


def make_workdir(db_name: str = DEFAULT_DB, *, mail: bool = True) -> Workdir:
    """A temp directory with the product's data dir and (``mail``) a throw-away CA
    for the mail servers; sets the process environment."""
    root = Path(tempfile.mkdtemp(prefix="postkamer-bench-"))
    root.chmod(0o755)
    ca_cert = ca_key = None
    if mail:
        import trustme

        ca = trustme.CA(organization_name="Postkamer bench CA")
        ca_cert, ca_key = root / "ca.pem", root / "ca-key.pem"
        ca.cert_pem.write_to_path(str(ca_cert))
        ca.private_key_pem.write_to_path(str(ca_key))
    data_dir = root / "data"
    data_dir.mkdir()
    work = Workdir(root, ca_cert, ca_key, data_dir, db_name)
    os.environ.update(work.env())
    return work


def workdir_from_env() -> Workdir:
    """In a child process: the parent's workdir, from the inherited environment."""
    ca_cert = Path(os.environ["MAIL_TLS_CA_FILE"])
    return Workdir(
        root=ca_cert.parent,
        ca_cert=ca_cert,
        ca_key=ca_cert.parent / "ca-key.pem",
        data_dir=Path(os.environ["POSTKAMER_DATA_DIR"]),
        db_name=os.environ["DATABASE_URL"].rsplit("/", 1)[1],
    )


def mail_ca(work: Workdir):
    import trustme

    from tests.support.mailservers import MailCA

    ca = trustme.CA.from_pem(work.ca_cert.read_bytes(), work.ca_key.read_bytes())
    return MailCA(ca=ca, path=work.ca_cert)


def create_database(db_name: str) -> None:
    """A new, empty database (dropped first if it exists)."""
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{db_name}"')


def drop_database(db_name: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')


def database_exists(db_name: str) -> bool:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [db_name])
        return found.fetchone() is not None


def backend_pid() -> int:
    """The process id of Django's PostgreSQL backend (its CPU is read from /proc)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def django_setup() -> None:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings_test")
    # Celery's Django fixup (config/celery.py creates the app during setup) puts the
    # working directory first on sys.path: from the project's root that would load
    # the live tree instead of this run's snapshot.
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        django.setup()
    finally:
        os.chdir(cwd)


def migrate() -> None:
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)


# --- servers and the mailbox ----------------------------------------------------------------


def start_dovecot(work: Workdir):
    from tests.support.mailservers import DovecotServer

    root = work.root / "dovecot"
    root.mkdir()
    server = DovecotServer(root, mail_ca(work))
    server.start()
    return server


def prepare_maildir(dovecot, username: str) -> Path:
    """The user's Maildir, created with the owner Dovecot reads mail as."""
    maildir = dovecot.maildir(username)
    for sub in ("cur", "new", "tmp"):
        dovecot._ensure_dir(maildir / sub)  # the harness's own helper (mkdir + chown)
    return maildir


def start_smtp(work: Workdir):
    from tests.support.mailservers import SMTPTestServer

    server = SMTPTestServer(mail_ca(work))
    server.start()
    return server


@dataclass
class Setup:
    account_id: str
    admin_id: str
    inbox_id: str
    mailbox_id: str
    password: str


def create_team_mailbox(dovecot, smtp, *, password: str | None = None) -> Setup:
    """An account, its admin, a Support inbox and the team mailbox connected to it,
    through the product's own services (connection test included).

    ``smtp`` needs ``add_user`` and ``smtp_settings`` (an SMTPTestServer or a
    stand-in for one running in another process)."""
    from inboxes.models import Mailbox
    from inboxes.services import ServerInput, mailbox_connect

    password = password or secrets.token_urlsafe(16)
    dovecot.add_user(MAIL_USER, password)
    smtp.add_user(MAIL_USER, password)
    account, admin, inbox = _account_with_inbox()
    imap = dovecot.imap_settings(MAIL_USER, password)  # implicit TLS, as users connect
    smtp_settings = smtp.smtp_settings(MAIL_USER, password)
    mailbox = mailbox_connect(
        actor=admin,
        address=TEAM_ADDRESS,
        kind="team",
        imap=ServerInput(imap.host, imap.port, imap.security, imap.username, imap.password),
        smtp=ServerInput(
            smtp_settings.host,
            smtp_settings.port,
            smtp_settings.security,
            smtp_settings.username,
            smtp_settings.password,
        ),
        acknowledge_team_visibility=True,
        inbox=inbox,
    )
    Mailbox.objects.filter(pk=mailbox.pk).update(backfill_days=None)
    return Setup(str(account.pk), str(admin.pk), str(inbox.pk), str(mailbox.pk), password)


def _account_with_inbox():
    """An account (through the product's sign-up service), its admin and a Support inbox."""
    from accounts.services import account_create
    from inboxes.models import Inbox

    account, admin, _token = account_create(
        name="Bench Co",
        plan="professional",
        admin_email="admin@bench.example.com",
        admin_password=secrets.token_urlsafe(16),
        admin_full_name="Bench Admin",
    )
    inbox = Inbox.objects.create(account=account, name="Support", from_name="Bench Support")
    return account, admin, inbox


def create_oauth_team_mailbox(provider: str, consent) -> Setup:
    """An account, its admin, a Support inbox and a team mailbox connected with OAuth
    through the product's own sign-in code: ``oauth_client(provider).begin``, the
    consent page (``consent(url)`` plays the browser and returns the callback's
    query parameters), ``complete`` and ``oauth_mailbox_connect``, as the connect
    views do."""
    from inboxes.models import Mailbox
    from inboxes.oauth_connect import oauth_mailbox_connect
    from inboxes.providers.signin import oauth_client

    account, admin, inbox = _account_with_inbox()
    client = oauth_client(provider)
    redirect_uri = f"http://bench.invalid/connect/{provider}/callback/"
    url, flow = client.begin(redirect_uri=redirect_uri, login_hint=TEAM_ADDRESS)
    grant = client.complete(flow=flow, params=consent(url), redirect_uri=redirect_uri)
    mailbox = oauth_mailbox_connect(
        actor=admin,
        provider=provider,
        grant=grant,
        kind="team",
        inbox=inbox,
        acknowledge_team_visibility=True,
    )
    Mailbox.objects.filter(pk=mailbox.pk).update(backfill_days=None)
    return Setup(str(account.pk), str(admin.pk), str(inbox.pk), str(mailbox.pk), "")


# --- measuring ------------------------------------------------------------------------------


def log(message: str) -> None:
    """A progress line with the time of day."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def mib(kib: int) -> float:
    return kib / 1024


class PhaseTimer:
    """Wraps product functions (in the benchmark's own process only) to see where
    the time goes: seconds and calls per label; ``restore`` puts them back."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.originals: dict = {}

    def wrap(self, owner, name: str, label: str, *, consume: bool = False) -> None:
        original = getattr(owner, name, None)
        if original is None:  # the product changed shape: time what is still there
            return
        seconds, calls = self.seconds, self.calls
        seconds.setdefault(label, 0.0)
        calls.setdefault(label, 0)
        self.originals.setdefault((owner, name), original)

        def timed(*a, **kw):
            t = time.perf_counter()
            try:
                result = original(*a, **kw)
                if consume:  # a generator: time its iteration too
                    result = list(result)
                return result
            finally:
                seconds[label] += time.perf_counter() - t
                calls[label] += 1

        setattr(owner, name, timed)

    def restore(self) -> None:
        for (owner, name), original in self.originals.items():
            setattr(owner, name, original)
        self.originals.clear()


def proc_status_kib(field: str, pid: str = "self") -> int:
    """A /proc/<pid>/status figure in KiB (VmHWM: peak resident set, VmRSS: now)."""
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def tree_memory_kib(pid: int) -> tuple[int, int, int, int]:
    """The memory of a process and its children, in KiB: RSS summed over all (pages
    they share, such as libpython, counted twice), PSS summed (each shared page
    split between all the processes that map it), the process's own RSS, and the
    children's private pages (USS): what they add beyond the process."""
    pids = [pid]
    with contextlib.suppress(OSError):
        pids += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    rss = pss = parent_rss = children_uss = 0
    for each in pids:
        fields = {}
        with contextlib.suppress(OSError):  # it just exited
            for line in Path(f"/proc/{each}/smaps_rollup").read_text().splitlines():
                name, _, rest = line.partition(":")
                if name in ("Rss", "Pss", "Private_Clean", "Private_Dirty"):
                    fields[name] = int(rest.split()[0])
        rss += fields.get("Rss", 0)
        pss += fields.get("Pss", 0)
        if each == pid:
            parent_rss = fields.get("Rss", 0)
        else:
            children_uss += fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
    return rss, pss, parent_rss, children_uss


def run_child(script: Path, args: list[str], result_file: Path, timeout: float = 3600) -> dict:
    """Run ``script --child ...`` in a fresh interpreter; returns the JSON it wrote."""
    result_file.unlink(missing_ok=True)
    command = [sys.executable, str(script), "--child", *args, "--result-file", str(result_file)]
    completed = subprocess.run(command, timeout=timeout, cwd=ROOT)
    if completed.returncode != 0 or not result_file.exists():
        raise RuntimeError(f"child {args[0]} failed with exit code {completed.returncode}")
    return json.loads(result_file.read_text())


def write_result(path: str, data: dict) -> None:
    Path(path).write_text(json.dumps(data, indent=2, default=str))


def machine(pg_settings: tuple[str, ...] = ()) -> dict:
    """What the figures were measured on; ``pg_settings``: PostgreSQL settings to
    add as ``pg_<name>`` (e.g. shared_buffers)."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        dovecot = subprocess.run(
            ["/usr/sbin/dovecot", "--version"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except OSError:
        dovecot = "?"
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_mib": proc_meminfo_mib("MemTotal"),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "dovecot": dovecot,
        "postgresql": "?",
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
    }
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL) as conn:
            info["postgresql"] = conn.execute("SHOW server_version").fetchone()[0]
            for name in pg_settings:
                info[f"pg_{name}"] = conn.execute(f"SHOW {name}").fetchone()[0]
    except Exception as exc:  # the figures still make sense without it
        info["pg_error"] = str(exc)
    return info


_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, *, reaped_children: bool = False) -> float:
    """CPU time (user + system) of a process; with ``reaped_children`` also that of
    its children that have exited (Dovecot's imap processes, after logout)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # After the ")": state is fields[0], so utime (14) is fields[11].
    ticks = int(fields[11]) + int(fields[12])
    if reaped_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / _TICKS


def tree_cpu_seconds(root_pid: int) -> float:
    """CPU of a server process, its exited children and its live children."""
    total = cpu_seconds(root_pid, reaped_children=True)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == root_pid:
            total += cpu_seconds(int(entry.name), reaped_children=True)
    return total


def loadavg() -> float:
    """The 1-minute load average: others' tests on the same cores skew every figure."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except OSError:
        return 0.0


def file_create_micros(directory: Path, count: int = 200) -> float:
    """Microseconds to create one empty file in a new subdirectory of ``directory``
    (the files stay until the run's cleanup: removing them would slow the next
    creates: bench/README.md, "file creation")."""
    probe = directory / "create-probe"
    probe.mkdir(exist_ok=True)
    started = time.perf_counter()
    for number in range(count):
        os.close(os.open(probe / f"{number}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    return (time.perf_counter() - started) / count * 1e6


def wait_quiet(max_seconds: float, threshold: float = 0.5) -> float:
    """Wait (at most ``max_seconds``) until the load average is below ``threshold``."""
    deadline = time.monotonic() + max_seconds
    while loadavg() >= threshold and time.monotonic() < deadline:
        time.sleep(5)
    return loadavg()


def proc_meminfo_mib(field: str) -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 0


def cleanup(work: Workdir, *servers, keep: bool = False, snapshot: str | None = None) -> None:
    for server in servers:
        if server is None:
            continue
        try:
            server.stop()
        except Exception as exc:  # keep cleaning up
            print(f"warning: stopping {type(server).__name__}: {exc}", file=sys.stderr)
    if keep:
        print(f"kept {work.root} and database {work.db_name}")
        return
    try:
        from django.db import connections

        connections.close_all()
    except Exception:
        pass
    try:
        drop_database(work.db_name)
    except Exception as exc:
        print(f"warning: could not drop {work.db_name}: {exc}", file=sys.stderr)
    shutil.rmtree(work.root, ignore_errors=True)
    remove_snapshot(snapshot)


__all__ = [name for name in dir() if not name.startswith("_")] + ["asdict"]
