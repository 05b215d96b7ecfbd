"""Real background processes for end-to-end and fault tests.

- ``engine``: starts real ``celery worker``, ``celery beat`` and ``manage.py
  watch_mailboxes`` subprocesses on the test database, with the test process's
  data directory (file storage, cache, generated keys) and a Redis broker that
  the test process publishes to as well;
- ``TcpProxy``: a threaded 127.0.0.1 TCP proxy that can cut its connections
  after a number of bytes from the server;
- ``private_redis``: a throw-away ``redis-server`` on a free port that a test
  may restart (losing everything it held).

Every process is started here and stopped here, by its PID: SIGTERM, then
SIGKILL after a timeout. Tests that use the engine need ``transactional_db``
(the subprocesses must see committed rows); the fixtures depend on it, so the
processes stop before the database is flushed.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings

from tests.support.mailservers import LOCALHOST, free_port

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VENV_BIN = Path(sys.executable).parent
CELERY = str(VENV_BIN / "celery")
PYTHON = sys.executable
FALLBACK_BROKER_URL = "redis://127.0.0.1:6379/15"
QUEUES = ("default", "sync", "send")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 8.0

# Short intervals for the engine's timers in tests that need beat.
FAST_ENGINE_ENV = {
    "SYNC_POLL_SECONDS": "2",
    "OUTBOX_SWEEP_SECONDS": "2",
    "SYNC_LEASE_SECONDS": "5",
    "OUTBOX_SEND_LEASE_SECONDS": "5",
}


def wait_until(
    predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.05
) -> object:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# --- Processes -----------------------------------------------------------------------------------


def _children_of(pid: int) -> list[int]:
    """PIDs whose parent is ``pid`` (from /proc)."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may contain spaces and parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        # A zombie (killed, not yet reaped) is not a running child any more.
        if len(fields) > 1 and int(fields[1]) == pid and fields[0] != "Z":
            children.append(int(entry.name))
    return sorted(children)


def _started(pid: int) -> int | None:
    """The start time of process ``pid`` (clock ticks after boot), None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rfind(")") + 2 :].split()[19])


def _identify(pids: list[int]) -> list[tuple[int, int]]:
    """(pid, start time) pairs, so a PID reused by another process is never signalled."""
    return [(pid, start) for pid in pids if (start := _started(pid)) is not None]


def _kill_if_same(processes: list[tuple[int, int]]) -> None:
    for pid, start in processes:
        if _started(pid) == start and _alive(pid):
            _signal(pid, signal.SIGKILL)


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers signal 0; treat it as gone.
    with contextlib.suppress(OSError):
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    return False


class Process:
    """One subprocess with its output in a log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self.popen: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                self.argv,
                cwd=BASE_DIR,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def describe(self) -> str:
        return f"--- {self.name} log ({self.log_path})\n{self.log()[-6000:]}"

    def wait_for_log(self, pattern: str, count: int = 1, timeout: float = 20.0) -> str:
        """Wait until ``pattern`` (a regex) matched at least ``count`` times in the log."""
        regex = re.compile(pattern)

        def found() -> str | None:
            if not self.alive():
                raise AssertionError(f"{self.name} exited\n{self.describe()}")
            text = self.log()
            return text if len(regex.findall(text)) >= count else None

        try:
            return str(wait_until(found, timeout, f"{pattern!r} x{count} in {self.name} log"))
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.describe()}") from None

    def count(self, pattern: str) -> int:
        return len(re.findall(pattern, self.log()))

    def matches(self, pattern: str) -> list:
        """``re.findall`` over the log so far."""
        return re.findall(pattern, self.log())

    def terminate(self) -> list[tuple[int, int]]:
        """SIGTERM; returns the children it had (to be sure they end too)."""
        popen = self.popen
        if popen is None or popen.poll() is not None:
            return []
        children = _identify(_children_of(popen.pid))
        _signal(popen.pid, signal.SIGTERM)
        return children

    def stop(
        self, timeout: float = STOP_TIMEOUT, children: list[tuple[int, int]] | None = None
    ) -> None:
        """SIGTERM, then SIGKILL (the process and whatever children it left)."""
        popen = self.popen
        if popen is None:
            return
        children = list(children or [])
        if popen.poll() is None:
            children += _identify(_children_of(popen.pid))
            _signal(popen.pid, signal.SIGTERM)
            try:
                popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                children += _identify(_children_of(popen.pid))
                _signal(popen.pid, signal.SIGKILL)
                popen.wait(timeout=10)
        _kill_if_same(children)


class CeleryWorker(Process):
    """``celery worker`` (prefork pool): the main process and its pool children."""

    def child_pids(self) -> list[int]:
        return _children_of(self.pid)

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        self.wait_for_log(r"\bready\.", timeout=timeout)
        wait_until(lambda: len(self.child_pids()) >= 1, 10, "the worker's pool children")

    def kill_children(self) -> list[int]:
        """SIGKILL every pool child (as the OOM killer would); returns their PIDs."""
        pids = self.child_pids()
        assert pids, "the worker has no pool children"
        _kill_if_same(_identify(pids))
        wait_until(lambda: not any(_alive(p) for p in pids), 10, "killed children to exit")
        return pids

    def kill(self) -> None:
        """SIGKILL the whole worker: the main process and its pool children."""
        pids = [self.pid, *self.child_pids()]
        _kill_if_same(_identify(pids))
        assert self.popen is not None
        self.popen.wait(timeout=10)
        wait_until(lambda: not any(_alive(p) for p in pids[1:]), 10, "killed children to exit")

    def tasks_succeeded(self, task: str) -> int:
        return self.count(rf"Task {re.escape(task)}\[[^\]]+\] succeeded")


# --- Broker ------------------------------------------------------------------------------------


def _redis_reachable(url: str) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


def default_broker_url() -> str:
    """The configured broker if it is Redis, else the local Redis (database 15)."""
    url = settings.CELERY_BROKER_URL
    return url if url.startswith(("redis://", "rediss://")) else FALLBACK_BROKER_URL


def _reset_app_connections(app) -> None:
    from kombu import pools

    pool = app._pool
    if pool is not None:
        with contextlib.suppress(Exception):
            pool.force_close_all()
    app._pool = None
    amqp = app.__dict__.get("amqp")
    if amqp is not None:
        amqp._producer_pool = None
    pools.reset()


def broker_key_prefix() -> str:
    """What this test process's broker keys start with (config/settings_test.py): the
    processes it starts inherit it, so pytest-xdist workers sharing a Redis database
    never take each other's tasks."""
    return str(settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("global_keyprefix", ""))


def purge_queues(url: str) -> None:
    from kombu import Connection

    options = {"global_keyprefix": broker_key_prefix()}
    with Connection(url, connect_timeout=2, transport_options=options) as conn:
        channel = conn.default_channel
        for queue in QUEUES:
            channel.queue_purge(queue)


def queued_count(url: str, queue: str) -> int:
    """Messages waiting in ``queue`` on a Redis broker."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        return int(client.llen(broker_key_prefix() + queue))
    finally:
        client.close()


@contextlib.contextmanager
def app_on_broker(url: str) -> Iterator[None]:
    """Make this process's Celery app publish to ``url`` (restored afterwards)."""
    from config.celery import app

    # Celery reads the CELERY_BROKER_URL environment variable before its
    # configuration, so both are switched.
    saved_conf = app.conf.get("broker_url")
    saved_env = os.environ.get("CELERY_BROKER_URL")
    _reset_app_connections(app)
    app.conf.broker_url = url
    os.environ["CELERY_BROKER_URL"] = url
    try:
        assert app.connection_for_write().as_uri(include_password=True) == url
        yield
    finally:
        _reset_app_connections(app)
        app.conf.broker_url = saved_conf
        if saved_env is None:
            os.environ.pop("CELERY_BROKER_URL", None)
        else:
            os.environ["CELERY_BROKER_URL"] = saved_env


def switch_app_broker_connections() -> None:
    """Drop this process's broker connections (after the broker restarted)."""
    from config.celery import app

    _reset_app_connections(app)


# --- The engine: worker, beat, watcher -----------------------------------------------------------


def subprocess_database_url() -> str:
    """A DATABASE_URL naming the database this test process uses (the test DB)."""
    from django.db import connection

    data = connection.settings_dict
    if data["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{data['NAME']}"
    if "postgresql" not in data["ENGINE"]:
        raise RuntimeError(f"unsupported database engine {data['ENGINE']}")
    user = quote(data.get("USER") or "", safe="")
    password = quote(data.get("PASSWORD") or "", safe="")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = data.get("HOST") or "127.0.0.1"
    port = f":{data['PORT']}" if data.get("PORT") else ""
    return f"postgres://{auth}{host}{port}/{quote(data['NAME'], safe='')}"


class Engine:
    """Starts worker/beat/watcher subprocesses for one test and stops them after it."""

    def __init__(self, broker_url: str, root: Path) -> None:
        self.broker_url = broker_url
        self.root = root
        self.processes: list[Process] = []

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "DJANGO_SETTINGS_MODULE": "config.settings_test",
                "DATABASE_URL": subprocess_database_url(),
                "DATABASE_CONN_MAX_AGE": "0",
                "CELERY_BROKER_URL": self.broker_url,
                "POSTKAMER_DATA_DIR": str(settings.DATA_DIR),
                # tests/support/mailservers.py put the CA and the loopback allowance in
                # os.environ; repeat them in case a test changed its settings.
                "MAIL_TLS_CA_FILE": str(settings.MAIL_TLS_CA_FILE),
                "ALLOW_PRIVATE_MAIL_HOSTS": "true",
                "MAIL_ALLOWED_PORTS": "",
                "PYTHONUNBUFFERED": "1",
                "PYTHONDONTWRITEBYTECODE": "1",
            }
        )
        env.update(extra or {})
        return env

    def _log(self, name: str) -> Path:
        return self.root / f"{name}-{len(self.processes)}.log"

    def worker(
        self, env: dict[str, str] | None = None, concurrency: int = 2, wait: bool = True
    ) -> CeleryWorker:
        name = f"test-{uuid.uuid4().hex[:10]}"
        argv = [
            CELERY,
            "-A",
            "config",
            "worker",
            "-Q",
            ",".join(QUEUES),
            "--concurrency",
            str(concurrency),
            "--pool",
            "prefork",
            "--loglevel",
            "INFO",
            "-n",
            f"{name}@%h",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
        # The sync and send leases are taken and judged inside the worker.
        worker = CeleryWorker(
            name, argv, self.env({**FAST_ENGINE_ENV, **(env or {})}), self._log("worker")
        )
        self.processes.append(worker)
        worker.start()
        if wait:
            worker.wait_ready()
        return worker

    def beat(self, env: dict[str, str] | None = None, wait: bool = True) -> Process:
        """``celery beat`` with FAST_ENGINE_ENV: polls and sweeps every 2 s."""
        schedule = self.root / f"beat-schedule-{uuid.uuid4().hex[:8]}"
        argv = [
            CELERY,
            "-A",
            "config",
            "beat",
            "--loglevel",
            "INFO",
            "-s",
            str(schedule),
            "--pidfile",
            str(self.root / f"beat-{uuid.uuid4().hex[:8]}.pid"),
        ]
        beat = Process(
            "beat", argv, self.env({**FAST_ENGINE_ENV, **(env or {})}), self._log("beat")
        )
        self.processes.append(beat)
        beat.start()
        if wait:
            beat.wait_for_log(r"beat: Starting", timeout=START_TIMEOUT)
        return beat

    def watcher(
        self,
        env: dict[str, str] | None = None,
        refresh: float = 0.5,
        *,
        sync_on_workers: bool = True,
    ) -> Process:
        """``manage.py watch_mailboxes``; its log shows the IMAP commands (LOG_LEVEL=DEBUG).
        These tests follow each sync through the worker (``--sync-on-workers``); the
        watcher's own syncs (its default) are tested in test_watcher_processes.py."""
        argv = [PYTHON, "manage.py", "watch_mailboxes", "--refresh", str(refresh)]
        if sync_on_workers:
            argv.append("--sync-on-workers")
        extra = {"LOG_LEVEL": "DEBUG", **(env or {})}
        watcher = Process("watcher", argv, self.env(extra), self._log("watcher"))
        self.processes.append(watcher)
        watcher.start()
        return watcher

    def describe(self) -> str:
        return "\n".join(process.describe() for process in self.processes)

    def stop(self) -> None:
        # SIGTERM to all first, so they shut down side by side.
        children = {id(p): p.terminate() for p in self.processes}
        for process in reversed(self.processes):
            process.stop(children=children[id(process)])


@pytest.fixture
def engine(transactional_db) -> Iterator[Engine]:
    """Worker/beat/watcher subprocesses on the default broker (see ``default_broker_url``).

    The test process's Celery app publishes to the same broker; its queues are
    purged first. The processes' logs are printed at teardown (pytest shows them
    for failed tests).
    """
    url = default_broker_url()
    if not _redis_reachable(url):
        pytest.skip(f"no Redis at {url}")
    root = Path(tempfile.mkdtemp(prefix="postkamer-engine-"))
    purge_queues(url)
    engine = Engine(url, root)
    with app_on_broker(url):
        try:
            yield engine
        finally:
            engine.stop()
            # Captured output: pytest shows it only when the test failed.
            print(engine.describe())
    shutil.rmtree(root, ignore_errors=True)


# --- A private Redis ---------------------------------------------------------------------------


class PrivateRedis:
    """redis-server on a free 127.0.0.1 port, without persistence."""

    binary = "/usr/bin/redis-server"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://{LOCALHOST}:{self.port}/{db}"

    def start(self) -> None:
        with (self.root / "redis-stdout.log").open("ab") as log:
            self.process = subprocess.Popen(
                [
                    self.binary,
                    "--port",
                    str(self.port),
                    "--bind",
                    LOCALHOST,
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.root),
                    "--logfile",
                    str(self.root / "redis.log"),
                    "--daemonize",
                    "no",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_until(
            lambda: self.process.poll() is not None or _redis_reachable(self.url()),
            START_TIMEOUT,
            "the private redis-server",
        )
        if self.process.poll() is not None:
            raise RuntimeError(f"redis-server exited: {(self.root / 'redis.log').read_text()}")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def restart(self) -> None:
        """Stop and start again on the same port: everything it held is gone."""
        self.stop()
        self.start()


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    if not Path(PrivateRedis.binary).exists():
        pytest.skip("redis-server is not installed")
    root = Path(tempfile.mkdtemp(prefix="postkamer-redis-"))
    server = PrivateRedis(root)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def private_engine(transactional_db, private_redis) -> Iterator[Engine]:
    """Like ``engine``, on the private Redis (which the test may restart)."""
    root = Path(tempfile.mkdtemp(prefix="postkamer-engine-"))
    url = private_redis.url()
    engine = Engine(url, root)
    with app_on_broker(url):
        try:
            yield engine
        finally:
            engine.stop()
            # Captured output: pytest shows it only when the test failed.
            print(engine.describe())
    shutil.rmtree(root, ignore_errors=True)


# --- A TCP proxy ---------------------------------------------------------------------------------


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to ``target``; can cut connections mid-stream.

    ``cut_after``: when set, every new connection is closed (both sides) once
    the server has sent that many bytes on it; what the server sent up to then
    is passed on. ``rate``: when set, the server's bytes are passed on at about
    this many bytes per second (a slow link). ``connections`` counts accepted
    connections, ``cuts`` the cut ones.
    """

    def __init__(self, target_port: int, target_host: str = LOCALHOST) -> None:
        self.target = (target_host, target_port)
        self.cut_after: int | None = None
        self.rate: float | None = None
        self.connections = 0
        self.cuts = 0
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((LOCALHOST, 0))
        self._listener.listen(64)
        self._listener.settimeout(0.1)
        self.host = LOCALHOST
        self.port: int = self._listener.getsockname()[1]
        self._stopping = threading.Event()
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True)
        self._acceptor.start()

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            client.settimeout(None)
            with self._lock:
                self.connections += 1
                self._sockets.update((client, upstream))
            state = {"from_server": 0, "cut_after": self.cut_after}
            threading.Thread(
                target=self._pump, args=(client, upstream, None, client, upstream), daemon=True
            ).start()
            threading.Thread(
                target=self._pump, args=(upstream, client, state, client, upstream), daemon=True
            ).start()

    def _pump(self, source, target, state, client, upstream) -> None:
        try:
            while True:
                data = source.recv(65536 if state is None or self.rate is None else 8192)
                if not data:
                    break
                if state is not None and state["cut_after"] is not None:
                    room = state["cut_after"] - state["from_server"]
                    if len(data) >= room:
                        if room > 0:
                            target.sendall(data[:room])
                        with self._lock:
                            self.cuts += 1
                        break
                    state["from_server"] += len(data)
                target.sendall(data)
                if state is not None and self.rate:
                    time.sleep(len(data) / self.rate)
        except OSError:
            pass
        finally:
            self._close_pair(client, upstream)

    def _close_pair(self, client: socket.socket, upstream: socket.socket) -> None:
        for sock in (client, upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
            with self._lock:
                self._sockets.discard(sock)

    def close(self) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
        self._acceptor.join(timeout=2)


@pytest.fixture
def imap_proxy(dovecot) -> Iterator[TcpProxy]:
    """A proxy in front of Dovecot's IMAPS port (TLS passes through untouched).

    Request it before ``engine`` so that the engine's processes stop before it
    closes (else the watcher logs a dropped IDLE connection at teardown)."""
    proxy = TcpProxy(dovecot.imaps_port)
    try:
        yield proxy
    finally:
        proxy.close()


# --- Comparing the source with what was stored ----------------------------------------------------


@contextlib.contextmanager
def imap_client(dovecot, user: tuple[str, str]) -> Iterator:
    """A plain imapclient session on Dovecot as ``user`` (the test's own view)."""
    import ssl

    import imapclient

    context = ssl.create_default_context(cafile=str(settings.MAIL_TLS_CA_FILE))
    client = imapclient.IMAPClient(
        dovecot.host, dovecot.imaps_port, ssl_context=context, timeout=10
    )
    try:
        client.login(*user)
        yield client
    finally:
        with contextlib.suppress(Exception):
            client.logout()


def server_message_ids(dovecot, user: tuple[str, str], folder: str = "INBOX") -> list[str]:
    """The Message-ID of every message in ``folder`` on the server, one per message."""
    from email.parser import BytesHeaderParser

    key = b"BODY[HEADER.FIELDS (MESSAGE-ID)]"
    with imap_client(dovecot, user) as client:
        client.select_folder(folder, readonly=True)
        uids = client.search("ALL")
        data = client.fetch(uids, ["BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"]) if uids else {}
    ids = []
    for uid in uids:
        header = BytesHeaderParser().parsebytes(data[uid][key])["Message-ID"]
        ids.append(" ".join(str(header).split()))
    return ids


def assert_stored_exactly_once(inbox, source_ids: list[str]) -> None:
    """Every source message is one Message and in one conversation; nothing else is."""
    from collections import Counter

    from conversations.models import ConversationMessage
    from inboxes.models import Direction, Message

    assert len(source_ids) == len(set(source_ids)), "the source itself holds duplicates"
    stored = Counter(
        Message.objects.filter(direction=Direction.INBOUND).values_list("message_id", flat=True)
    )
    filed = Counter(
        ConversationMessage.objects.filter(
            inbox=inbox, message__direction=Direction.INBOUND
        ).values_list("message__message_id", flat=True)
    )
    source = Counter(source_ids)
    missing = sorted(source - stored)
    doubled = sorted(key for key, n in stored.items() if n > 1)
    extra = sorted(stored - source)
    assert not missing and not doubled and not extra, (
        f"{len(source)} on the server, {sum(stored.values())} stored: "
        f"{len(missing)} missing (e.g. {missing[:3]}), {len(doubled)} doubled "
        f"(e.g. {doubled[:3]}), {len(extra)} unknown"
    )
    assert filed == source, (
        f"conversations hold {sum(filed.values())} links for {len(source)} messages: "
        f"missing {sorted(source - filed)[:3]}, doubled "
        f"{sorted(k for k, n in filed.items() if n > 1)[:3]}"
    )
