"""What one IDLE connection costs the watcher: threads with imapclient vs asyncio.

Starts a local Dovecot (tests/support/mailservers.py, with its process limits raised
for thousands of connections, see ``ScaledDovecot``), adds N users, and for each way
of waiting runs a fresh child process that opens N IDLE connections (TLS on the
IMAPS port, LOGIN, EXAMINE INBOX, IDLE; one shared SSL context) and reports:

- RSS before and after (``VmRSS``), so the RSS per connection;
- the CPU the process spends while all N connections sit in IDLE (a quiet window);
- that pushes still arrive: mail is delivered to 10 of the mailboxes and the child
  counts the connections whose IDLE reported it (then DONE and IDLE again).

    .venv/bin/python bench/watcher_memory.py                 # 200 1000 2000
    .venv/bin/python bench/watcher_memory.py 200 --quiet-seconds 5
    .venv/bin/python bench/watcher_memory.py 1000 --modes asyncio

The watcher (inboxes/sync/watch.py) waits the way these figures chose; see
bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PASSWORD = "bench-secret"
OPEN_AT_ONCE = 32  # connections being opened at the same time
THREAD_STACK = 256 * 1024
NOTIFIED = 10  # mailboxes that get a message while watched
IDLE_SECONDS = 60  # DONE and IDLE again after this (the watcher: IDLE_RENEW_SECONDS)


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def user_name(n: int) -> str:
    return f"watch{n:05d}@bench.example.com"


# --- The server ---------------------------------------------------------------------------


def start_dovecot(root: Path, users: int):
    import django
    import trustme

    django.setup()
    from tests.support.mailservers import DovecotServer, MailCA

    class ScaledDovecot(DovecotServer):
        """Dovecot for thousands of connections: login and imap processes each serve
        many clients (by default a TLS client holds a login process of its own as
        its TLS proxy, and an imap process, and the limit is 100 of each)."""

        def _config(self, cert_path: Path, key_path: Path) -> str:
            return super()._config(cert_path, key_path) + (
                "default_client_limit = 20000\n"
                "default_process_limit = 200\n"
                "service imap-login {\n  service_count = 0\n  client_limit = 5000\n"
                "  process_min_avail = 2\n  process_limit = 20\n}\n"
                "service imap {\n  service_count = 0\n  client_limit = 250\n  process_limit = 100\n}\n"
                "service anvil {\n  client_limit = 20000\n}\n"
                "mail_max_userip_connections = 50\n"
            )

    ca = trustme.CA(organization_name="Postkamer watcher bench CA")
    ca_path = root / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    (root / "dovecot").mkdir()
    server = ScaledDovecot(root / "dovecot", MailCA(ca=ca, path=ca_path))
    server.start()
    for n in range(users):
        server.add_user(user_name(n), PASSWORD)
        server.deliver(user_name(n), b"Subject: hello\r\n\r\nfirst\r\n")
    return server, ca_path


# --- Child: threads with imapclient --------------------------------------------------------


def run_threads(
    host: str, port: int, ca: str, count: int, events: list
) -> tuple[int, Callable[[], object]]:
    import imapclient

    threading.stack_size(THREAD_STACK)
    context = ssl.create_default_context(cafile=ca)
    ready = threading.Semaphore(0)
    stop = threading.Event()
    opening = threading.Semaphore(OPEN_AT_ONCE)

    def watch(n: int) -> None:
        try:
            with opening:
                client = imapclient.IMAPClient(host, port, ssl_context=context, timeout=60)
                client._imap.debug = 0
                client.login(user_name(n), PASSWORD)
                client.select_folder("INBOX", readonly=True)
        except Exception as exc:
            print(f"connection {n}: {exc}", file=sys.stderr)
            return
        finally:
            ready.release()
        while not stop.is_set():
            client.idle()
            responses = client.idle_check(timeout=IDLE_SECONDS)
            responses += client.idle_done()[1]
            if any(
                isinstance(r, tuple) and r[1:2] in ((b"EXISTS",), (b"RECENT",)) for r in responses
            ):
                events.append(n)
        client.logout()

    threads = [threading.Thread(target=watch, args=(n,), daemon=True) for n in range(count)]
    for thread in threads:
        thread.start()
    for _ in range(count):
        ready.acquire()
    return count, stop.set


# --- Child: asyncio ---------------------------------------------------------------------------


class AsyncIdle:
    """One IDLE connection on asyncio streams (what the bench measures)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.tag = 0

    async def command(self, line: str) -> list[bytes]:
        self.tag += 1
        tag = f"a{self.tag}".encode()
        self.writer.write(tag + b" " + line.encode() + b"\r\n")
        await self.writer.drain()
        lines = []
        while True:
            reply = await self.reader.readline()
            if not reply:
                raise ConnectionError("closed")
            lines.append(reply)
            if reply.startswith(tag + b" "):
                if not reply[len(tag) + 1 :].startswith(b"OK"):
                    raise ConnectionError(reply.decode())
                return lines

    async def open(self, host: str, port: int, context: ssl.SSLContext) -> None:
        self.reader, self.writer = await asyncio.open_connection(
            host, port, ssl=context, server_hostname=host
        )
        await self.reader.readline()
        await self.command(f'LOGIN "{user_name(self.n)}" "{PASSWORD}"')
        await self.command("EXAMINE INBOX")

    async def idle(self, stop: asyncio.Event, events: list) -> None:
        while not stop.is_set():
            self.tag += 1
            tag = f"a{self.tag}".encode()
            self.writer.write(tag + b" IDLE\r\n")
            await self.writer.drain()
            while not (await self.reader.readline()).startswith(b"+"):
                pass
            changed = False
            with contextlib.suppress(asyncio.TimeoutError):
                while not changed:
                    line = await asyncio.wait_for(self.reader.readline(), IDLE_SECONDS)
                    changed = line.endswith((b"EXISTS\r\n", b"RECENT\r\n", b"EXPUNGE\r\n"))
            self.writer.write(b"DONE\r\n")
            await self.writer.drain()
            while not (await self.reader.readline()).startswith(tag + b" "):
                pass
            if changed:
                events.append(self.n)
        self.writer.close()


def run_asyncio(
    host: str, port: int, ca: str, count: int, events: list
) -> tuple[int, Callable[[], object]]:
    context = ssl.create_default_context(cafile=ca)
    loop = asyncio.new_event_loop()
    opened = threading.Event()
    holder: dict = {}

    async def main() -> None:
        stop = asyncio.Event()
        holder["stop"] = stop
        gate = asyncio.Semaphore(OPEN_AT_ONCE)
        conns = [AsyncIdle(n) for n in range(count)]

        async def open_one(conn: AsyncIdle) -> None:
            async with gate:
                await conn.open(host, port, context)

        await asyncio.gather(*(open_one(c) for c in conns))
        tasks = [asyncio.create_task(c.idle(stop, events)) for c in conns]
        opened.set()
        await stop.wait()
        await asyncio.gather(*tasks, return_exceptions=True)

    thread = threading.Thread(target=lambda: loop.run_until_complete(main()), daemon=True)
    thread.start()
    opened.wait()
    return count, lambda: loop.call_soon_threadsafe(holder["stop"].set)


def child(mode: str, host: str, port: int, ca: str, count: int, quiet: float) -> None:
    import imapclient  # noqa: F401  (imported before the baseline in both modes)

    ssl.create_default_context(cafile=ca)
    time.sleep(0.2)
    before = rss_bytes()
    events: list[int] = []
    started = time.monotonic()
    runner = run_threads if mode == "threads" else run_asyncio
    _, stop = runner(host, port, ca, count, events)
    open_seconds = time.monotonic() - started
    time.sleep(1)
    after = rss_bytes()
    cpu_start, wall_start = time.process_time(), time.monotonic()
    time.sleep(quiet)
    cpu = time.process_time() - cpu_start
    wall = time.monotonic() - wall_start
    print(json.dumps({"event": "quiet"}), flush=True)
    sys.stdin.readline()  # the parent delivered
    deadline = time.monotonic() + 15
    while len(set(events)) < NOTIFIED and time.monotonic() < deadline:
        time.sleep(0.05)
    print(
        json.dumps(
            {
                "event": "done",
                "mode": mode,
                "connections": count,
                "rss_before": before,
                "rss_after": after,
                "per_connection": (after - before) / count,
                "open_seconds": open_seconds,
                "cpu_share_idle": cpu / wall,
                "notified": len(set(events)),
                "threads": threading.active_count(),
            }
        ),
        flush=True,
    )
    stop()


# --- Parent ---------------------------------------------------------------------------------------


def measure(server, ca: Path, mode: str, count: int, quiet: float) -> dict:
    argv = [sys.executable, __file__, "--child", mode, str(server.imaps_port), str(ca), str(count)]
    argv += ["--quiet-seconds", str(quiet)]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdin is not None
    result: dict = {}
    for line in proc.stdout:
        if not line.startswith("{"):
            continue
        message = json.loads(line)
        if message["event"] == "quiet":
            for n in range(NOTIFIED):
                server.deliver(user_name(n * (count // NOTIFIED)), b"Subject: push\r\n\r\nx\r\n")
            proc.stdin.write("go\n")
            proc.stdin.flush()
        elif message["event"] == "done":
            result = message
            break
    if not result:
        proc.kill()
        raise RuntimeError(f"the {mode} child failed:\n{server.describe()[-3000:]}")
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("counts", nargs="*", type=int, default=[200, 1000, 2000])
    parser.add_argument("--modes", default="threads,asyncio")
    parser.add_argument("--quiet-seconds", type=float, default=20)
    parser.add_argument("--child", nargs=4, metavar=("MODE", "PORT", "CA", "COUNT"))
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.child:
        mode, port, ca, count = args.child
        child(mode, "127.0.0.1", int(port), ca, int(count), args.quiet_seconds)
        return
    root = Path(tempfile.mkdtemp(prefix="postkamer-watch-bench-"))
    root.chmod(0o755)  # Dovecot's own users walk into it
    server, ca = start_dovecot(root, max(args.counts))
    rows = []
    try:
        print(f"{'mode':8} {'conns':>6} {'KiB/conn':>9} {'open s':>7} {'CPU idle':>9} pushed")
        for count in args.counts:
            for mode in args.modes.split(","):
                row = measure(server, ca, mode, count, args.quiet_seconds)
                rows.append(row)
                print(
                    f"{mode:8} {count:6} {row['per_connection'] / 1024:9.1f} "
                    f"{row['open_seconds']:7.1f} {row['cpu_share_idle'] * 100:8.2f}% "
                    f"{row['notified']}/{NOTIFIED}",
                    flush=True,
                )
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    print("target: < 150 KiB per connection for threads (else asyncio for the IDLE waits)")


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings_test")
    main()
