"""Microsoft Graph push: how soon new mail is visible after the fake Graph pushes.

Everything real except Microsoft: the fake Graph (tests/support/fakes/microsoft.py,
in this process) with a subscription the product made through its own keeper, the
product's web server (gunicorn, serving ``/hooks/microsoft/``), a Celery worker on
Redis, PostgreSQL. Each round delivers one message to the fake's inbox, which posts
its change notification to the hook; the round ends when the message is stored
(``MailboxMessage``). Target (issue 18): new mail visible < 5 s after the push.

    .venv/bin/python bench/graph_push.py              # 30 rounds
    .venv/bin/python bench/graph_push.py --rounds 10
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import harness  # noqa: E402

harness.use_project_root()

TARGET_SECONDS = 5.0
DB_NAME = "pk_mpush_bench"
BROKER = "redis://127.0.0.1:6379/7"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate, timeout: float, what: str, interval: float = 0.01):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("ab") as out:
        return subprocess.Popen(
            argv, cwd=harness.ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )


def flush_broker() -> None:
    """The broker's database is this bench's own (7): leave it empty."""
    import redis

    client = redis.Redis.from_url(BROKER)
    try:
        client.flushdb()
    finally:
        client.close()


def hook_answers(public_url: str) -> bool:
    import requests

    try:
        return requests.get(f"{public_url}/hooks/microsoft/", timeout=2).status_code == 405
    except requests.RequestException:
        return False


def stop(process: subprocess.Popen | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--keep", action="store_true", help="keep the database and workdir")
    parser.add_argument("--no-snapshot", action="store_true")
    parser.add_argument("--in-snapshot", default=None)
    args = parser.parse_args()
    harness.snapshot_and_reexec(Path(__file__), sys.argv[1:])

    work = harness.make_workdir(DB_NAME)
    harness.create_database(DB_NAME)
    port = free_port()
    public_url = f"http://127.0.0.1:{port}"
    os.environ.update(
        GRAPH_PUSH="true",
        PUBLIC_URL=public_url,
        CELERY_BROKER_URL=BROKER,
        ALLOWED_HOSTS="127.0.0.1,localhost",
    )
    harness.django_setup()
    harness.migrate()

    from django.conf import settings

    from tests.support.fakes.microsoft import FakeMicrosoft
    from tests.support.workers import purge_queues

    fake = FakeMicrosoft(harness.mail_ca(work)).start()
    fake_env = {
        "MICROSOFT_CLIENT_ID": fake.client_id,
        "MICROSOFT_CLIENT_SECRET": fake.client_secret,
        "MICROSOFT_AUTHORITY": fake.authority,
        "GRAPH_API_ENDPOINT": fake.graph_endpoint,
        "OAUTH_CA_FILE": fake.ca_path,
    }
    os.environ.update(fake_env)
    for name, value in fake_env.items():
        setattr(settings, name, value)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "SYNC_POLL_SECONDS": "3600"}
    purge_queues(BROKER)
    web = worker = None
    try:
        bin_dir = Path(sys.executable).parent
        web = start(
            [str(bin_dir / "gunicorn"), "config.wsgi", "-b", f"127.0.0.1:{port}", "-w", "2"],
            env,
            work.root / "web.log",
        )
        worker = start(
            [
                str(bin_dir / "celery"),
                "-A",
                "config",
                "worker",
                "-Q",
                "default,sync,send",
                "--concurrency",
                "2",
                "--loglevel",
                "INFO",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            env,
            work.root / "worker.log",
        )
        # Both ready before the clock starts: the figure is the product's, not start-up's.
        wait_for(
            lambda: " ready." in (work.root / "worker.log").read_text(errors="replace"),
            120,
            "the worker",
            interval=0.1,
        )
        wait_for(lambda: hook_answers(public_url), 60, "the web server", interval=0.1)
        measure(fake, args.rounds)
    finally:
        stop(worker)
        stop(web)
        fake.stop()
        flush_broker()
        harness.cleanup(work, keep=args.keep, snapshot=args.in_snapshot)


def measure(fake, rounds: int) -> None:
    from inboxes.models import Mailbox, MailboxMessage
    from tests.support.mail import make_email

    fake.add_user(harness.TEAM_ADDRESS, "Bench Support")
    connected_at = time.monotonic()
    setup = harness.create_oauth_team_mailbox("microsoft", fake.consent)
    # The connect queued the subscription: the worker makes it (Graph's handshake with
    # the hook included) and the first sync.
    wait_for(lambda: fake.push.of(harness.TEAM_ADDRESS), 60, "the subscription")
    subscribed = time.monotonic() - connected_at
    wait_for(
        lambda: Mailbox.objects.filter(pk=setup.mailbox_id, pushed_until__isnull=False).exists(),
        60,
        "push to hold",
    )
    wait_for(
        lambda: Mailbox.objects.filter(pk=setup.mailbox_id, last_synced_at__isnull=False).exists(),
        60,
        "the first sync",
    )
    harness.log(f"subscribed {subscribed:.2f} s after connecting")

    def stored() -> int:
        return MailboxMessage.objects.filter(folder__mailbox_id=setup.mailbox_id).count()

    visible, answered = [], []
    for n in range(-2, rounds):  # two rounds to warm up (first requests, imports), not counted
        before = stored()
        pushes_before = len(fake.push.pushes)
        started = time.monotonic()
        fake.deliver(harness.TEAM_ADDRESS, make_email(subject=f"Bench {n}", to="x@y.z"))
        wait_for(lambda: stored() > before, 30, f"message {n}")  # noqa: B023
        took = time.monotonic() - started
        push = fake.push.pushes[pushes_before]
        push.done.wait(10)
        if n >= 0:
            visible.append(took)
            answered.append(push.seconds)
        time.sleep(0.2)  # let the worker finish the sync's bookkeeping

    def ms(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return 1000 * ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    load = harness.loadavg()
    print()
    print(f"Graph push, {rounds} rounds (load {load:.1f}):")
    print(f"  subscribed after connect   {subscribed:.2f} s (connect -> Graph subscription)")
    print(
        f"  hook answer (202)          p50 {ms(answered, 0.5):.0f} ms, "
        f"max {1000 * max(answered):.0f} ms"
    )
    print(
        f"  new mail visible           p50 {ms(visible, 0.5):.0f} ms, "
        f"p95 {ms(visible, 0.95):.0f} ms, max {1000 * max(visible):.0f} ms, "
        f"mean {1000 * statistics.mean(visible):.0f} ms   target < {TARGET_SECONDS:.0f} s: "
        f"{'yes' if max(visible) < TARGET_SECONDS else 'NO'}"
    )


if __name__ == "__main__":
    main()
