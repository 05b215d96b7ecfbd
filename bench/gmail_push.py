"""Gmail push latency: new mail visible in the inbox after the fake Pub/Sub pushes.

    .venv/bin/python bench/gmail_push.py [--rounds 20] [--db NAME] [--broker URL] [--keep]

The product runs as in production, each part in a process of its own: gunicorn
(``/hooks/gmail/``, 2 workers), a Celery worker (``-Q default,sync,send``,
concurrency 2) on Redis, PostgreSQL. The fake Google of tests/support/fakes runs in
this process with its fake Pub/Sub (tests/support/fakes/pubsub.py): the team
mailbox is connected through the product's sign-in code, the worker makes its
``users.watch`` on the fake topic, and then, each round, one message is delivered
to the Gmail account; the fake publishes it and Pub/Sub POSTs the push (OIDC token
signed by the test key, verified by the web process against the fake's certs) to
gunicorn, which queues the sync; the worker syncs it through Gmail's history.

Measured per round, from the delivery: the push answered (the hook's 204), and the
message visible (its conversation in the Support inbox, polled every 10 ms). No
beat runs, so only the push can bring the mail in. Target: visible < 5 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import harness  # noqa: E402

harness.use_project_root()

SCRIPT = Path(__file__).resolve()
TARGET_SECONDS = 5.0


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate, timeout: float, what: str, interval: float = 0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(interval)
    raise RuntimeError(f"timed out waiting for {what}")


def start(name: str, argv: list[str], env: dict[str, str], root: Path) -> subprocess.Popen:
    log = (root / f"{name}.log").open("ab")
    return subprocess.Popen(
        argv,
        cwd=harness.ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop(process: subprocess.Popen | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()  # our own child, by its handle
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> int:
    harness.snapshot_and_reexec(SCRIPT, sys.argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--db", default="postkamer_bench_gmail_push")
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/6")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--no-snapshot", action="store_true")
    parser.add_argument("--in-snapshot")
    args = parser.parse_args()

    work = harness.make_workdir(args.db)
    harness.create_database(args.db)
    os.environ["CELERY_BROKER_URL"] = args.broker
    harness.django_setup()
    harness.migrate()
    from django.conf import settings

    from tests.support.fakes import google
    from tests.support.fakes.pubsub import CERTS_PATH, FakePubSub
    from tests.support.mail import make_email

    fake = google.FakeGoogle()
    fake.ca_file = str(work.ca_cert)
    fake.start(harness.mail_ca(work).server_context(google.LOOPBACK, "localhost"))
    pubsub = FakePubSub()
    fake.pubsub = pubsub
    port = free_port()
    public_url = f"http://127.0.0.1:{port}"
    pubsub.endpoint = f"{public_url}/hooks/gmail/"
    product_env = {
        "GOOGLE_CLIENT_ID": google.CLIENT_ID,
        "GOOGLE_CLIENT_SECRET": google.CLIENT_SECRET,
        "GOOGLE_AUTH_URI": f"{fake.base_url}/o/oauth2/auth",
        "GOOGLE_TOKEN_URI": f"{fake.base_url}/token",
        "GMAIL_API_ENDPOINT": f"{fake.base_url}/",
        "GMAIL_BATCH_URI": f"{fake.base_url}/batch/gmail/v1",
        "OAUTH_CA_FILE": str(work.ca_cert),
        "GMAIL_PUBSUB_TOPIC": pubsub.topic,
        "GMAIL_PUSH_SERVICE_ACCOUNT": pubsub.service_account,
        "GOOGLE_OIDC_CERTS_URL": f"{fake.base_url}{CERTS_PATH}",
        "PUBLIC_URL": public_url,
        "CELERY_BROKER_URL": args.broker,
        "DATABASE_CONN_MAX_AGE": "60",
    }
    for name, value in product_env.items():
        setattr(settings, name, value)  # this process connects the mailbox
    env = {**os.environ, **product_env, "PYTHONUNBUFFERED": "1"}
    venv = Path(sys.executable).parent
    web = worker = None
    try:
        from config.celery import app

        for queue in ("default", "sync", "send"):
            with app.connection_for_write() as conn:
                conn.default_channel.queue_purge(queue)
        web = start(
            "web",
            [
                str(venv / "gunicorn"),
                "config.wsgi",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "2",
                "--threads",
                "4",
            ],
            env,
            work.root,
        )
        worker = start(
            "worker",
            [
                str(venv / "celery"),
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
            work.root,
        )
        import urllib.request

        def web_up() -> bool:
            try:
                urllib.request.urlopen(f"{public_url}/login/", timeout=1).read()  # noqa: S310
                return True
            except OSError:
                return False

        wait_for(web_up, 60, "gunicorn", interval=0.2)

        from conversations.models import Conversation
        from inboxes.models import Mailbox, PushChannel, PushStatus

        def consent(url: str) -> dict:
            from urllib.parse import parse_qs, urlsplit

            fake.consent_as = harness.TEAM_ADDRESS
            query = urlsplit(fake.consent(url)).query
            return {k: v[0] for k, v in parse_qs(query).items()}

        setup = harness.create_oauth_team_mailbox("gmail", consent)
        harness.log("connected; waiting for the watch (made by the worker) and the first sync")
        wait_for(
            lambda: (
                PushChannel.objects.filter(
                    mailbox_id=setup.mailbox_id, status=PushStatus.ACTIVE
                ).exists()
                and Mailbox.objects.filter(pk=setup.mailbox_id, sync_state="idle").exists()
            ),
            120,
            "the watch and the first sync",
            interval=0.2,
        )
        answered: list[float] = []
        visible: list[float] = []
        for round_ in range(args.rounds):
            subject = f"Pushed {round_}"
            started = time.perf_counter()
            fake.deliver(harness.TEAM_ADDRESS, make_email(subject=subject, to=harness.TEAM_ADDRESS))
            answered.append(time.perf_counter() - started)
            status = pubsub.pushes[-1].status
            if status != 204:
                raise RuntimeError(f"the hook answered {status}; see {work.root}/web.log")
            wait_for(
                lambda subject=subject: Conversation.objects.filter(
                    inbox_id=setup.inbox_id, subject=subject
                ).exists(),
                30,
                subject,
            )
            visible.append(time.perf_counter() - started)
            time.sleep(0.3)  # one round at a time
        print()
        print(f"Gmail push, {args.rounds} rounds (gunicorn + Celery worker + PostgreSQL):")
        print(
            f"  push answered (204):  p50 {statistics.median(answered) * 1000:.0f} ms, "
            f"max {max(answered) * 1000:.0f} ms"
        )
        print(
            f"  new mail visible:     p50 {statistics.median(visible):.2f} s, "
            f"p95 {percentile(visible, 95):.2f} s, max {max(visible):.2f} s "
            f"(target < {TARGET_SECONDS:.0f} s: {'met' if max(visible) < TARGET_SECONDS else 'MISSED'})"
        )
        print(f"  certs fetched: {len(fake.calls_to(CERTS_PATH))} (2 web workers)")
        print(f"  load average at the end: {harness.loadavg():.2f}")
    finally:
        stop(web)
        stop(worker)
        harness.cleanup(work, fake, keep=args.keep, snapshot=args.in_snapshot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
