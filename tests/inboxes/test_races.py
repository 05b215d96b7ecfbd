"""Two simultaneous requests can never both win (R1-R3), on PostgreSQL and SQLite.

The PostgreSQL races use threads against the test database; the SQLite race runs
the real embedded default: a server process on a SQLite file, hit over HTTP.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from django.db import connection, connections

from inboxes.models import Inbox, Mailbox
from tests.support.api import api_client_for
from tests.support.factories import UserFactory
from tests.support.mailservers import free_port

ROOT = Path(__file__).resolve().parent.parent.parent
N = 20


def run_all_at_once(calls):
    """Start every call at the same moment; each thread has its own DB connection."""
    barrier = threading.Barrier(len(calls))

    def run(call):
        barrier.wait()
        try:
            return call()
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(run, calls))


requires_postgres = pytest.mark.skipif(
    not os.environ.get("DATABASE_URL", "").startswith(("postgres:", "postgresql:")),
    reason="the PostgreSQL race runs where DATABASE_URL points at PostgreSQL (.ci/run)",
)


@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_twenty_users_connecting_one_address_at_once_yields_one_winner(account, connect_payload):
    assert connection.vendor == "postgresql"
    users = [UserFactory(account=account) for _ in range(N)]
    clients = [api_client_for(u) for u in users]
    payload = connect_payload("race@acme.example.com")

    responses = run_all_at_once(
        [lambda c=c: c.post("/api/v1/mailboxes/", payload, format="json") for c in clients]
    )

    statuses = Counter(r.status_code for r in responses)
    assert statuses == {201: 1, 409: N - 1}, statuses
    assert {r.json()["code"] for r in responses if r.status_code == 409} == {"address_in_use"}
    assert Mailbox.objects.filter(canonical_address="race@acme.example.com").count() == 1


@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_two_inboxes_racing_for_one_team_mailbox_yields_one_winner(admin, connect_payload):
    client = api_client_for(admin)
    mailbox = client.post(
        "/api/v1/mailboxes/", connect_payload("help@acme.example.com", kind="team"), format="json"
    ).json()
    inboxes = [
        client.post("/api/v1/inboxes/", {"name": f"Inbox {n}"}, format="json").json()
        for n in range(2)
    ]
    clients = [api_client_for(admin) for _ in inboxes]

    responses = run_all_at_once(
        [
            lambda c=c, i=i: c.patch(
                f"/api/v1/inboxes/{i['id']}/", {"mailbox": mailbox["id"]}, format="json"
            )
            for c, i in zip(clients, inboxes, strict=True)
        ]
    )

    assert sorted(r.status_code for r in responses) == [200, 409]
    assert [r.json()["code"] for r in responses if r.status_code == 409] == [
        "team_address_in_other_inbox"
    ]
    assert Inbox.objects.filter(mailbox_id=mailbox["id"]).count() == 1


@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_inbox_creates_racing_at_the_plan_limit_never_exceed_it(admin, account):
    account.plan = "starter"
    account.save()
    clients = [api_client_for(admin) for _ in range(6)]
    responses = run_all_at_once(
        [
            lambda c=c, n=n: c.post("/api/v1/inboxes/", {"name": f"Inbox {n}"}, format="json")
            for n, c in enumerate(clients)
        ]
    )
    assert Counter(r.status_code for r in responses) == {201: 2, 409: 4}
    assert Inbox.objects.filter(account=account).count() == 2


# --- The embedded default: SQLite ---------------------------------------------------------------


def _http(method: str, url: str, body: dict | None = None, token: str | None = None):
    request = urllib.request.Request(
        url, method=method, data=json.dumps(body).encode() if body is not None else None
    )
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Token {token}")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, {"raw": raw.decode(errors="replace")[:500]}


@pytest.fixture
def sqlite_server(tmp_path, dovecot, smtp_server):
    """The product on its zero-configuration database, served by a threaded server."""
    env = {
        **os.environ,
        "POSTKAMER_DATA_DIR": str(tmp_path),
        "HTTPS": "false",
        "ALLOW_PRIVATE_MAIL_HOSTS": "true",
        "MAIL_ALLOWED_PORTS": "",
        "DJANGO_SETTINGS_MODULE": "config.settings",
    }
    env.pop("DATABASE_URL", None)
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput", "-v0"], env=env, check=True, cwd=ROOT)
    out = subprocess.run(
        [
            *manage,
            "createaccount",
            "Racers",
            "--plan",
            "professional",
            "--admin-email",
            "admin@racers.example.com",
            "--admin-password",
            "a long enough passphrase",
        ],
        env=env,
        check=True,
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout
    admin_token = out.strip().splitlines()[-1].removeprefix("token: ")
    port = free_port()
    server = subprocess.Popen(
        [*manage, "runserver", f"127.0.0.1:{port}", "--noreload"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{base}/login/", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the SQLite server did not start") from None
                time.sleep(0.2)
        yield base, admin_token
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()


def test_on_sqlite_twenty_simultaneous_connects_yield_one_winner_and_no_500(
    sqlite_server, connect_payload
):
    base, admin_token = sqlite_server
    tokens = []
    for n in range(N):
        email = f"racer{n}@racers.example.com"
        status, _ = _http(
            "POST",
            f"{base}/api/v1/users/",
            {
                "email": email,
                "full_name": f"Racer {n}",
                "role": "member",
                "password": "a long enough passphrase",
            },
            admin_token,
        )
        assert status == 201
        status, body = _http(
            "POST",
            f"{base}/api/v1/auth/token/",
            {"email": email, "password": "a long enough passphrase"},
        )
        tokens.append(body["token"])
    payload = connect_payload("race@racers.example.com")
    barrier = threading.Barrier(N)

    def connect(token):
        barrier.wait()
        return _http("POST", f"{base}/api/v1/mailboxes/", payload, token)

    with ThreadPoolExecutor(max_workers=N) as pool:
        results = list(pool.map(connect, tokens))

    statuses = Counter(status for status, _ in results)
    assert statuses == {201: 1, 409: N - 1}, results
    assert {body["code"] for status, body in results if status == 409} == {"address_in_use"}

    # and two inboxes racing for one team mailbox
    team = _http(
        "POST",
        f"{base}/api/v1/mailboxes/",
        {**connect_payload("help@racers.example.com", kind="team")},
        admin_token,
    )[1]
    inboxes = [
        _http("POST", f"{base}/api/v1/inboxes/", {"name": f"Inbox {n}"}, admin_token)[1]
        for n in range(2)
    ]
    barrier2 = threading.Barrier(2)

    def attach(inbox):
        barrier2.wait()
        return _http(
            "PATCH", f"{base}/api/v1/inboxes/{inbox['id']}/", {"mailbox": team["id"]}, admin_token
        )

    with ThreadPoolExecutor(max_workers=2) as pool:
        attached = list(pool.map(attach, inboxes))
    assert sorted(status for status, _ in attached) == [200, 409], attached
