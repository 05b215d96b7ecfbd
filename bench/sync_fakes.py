"""The fake Google and Microsoft of tests/support/fakes for ``bench/sync.py --provider
gmail|microsoft``: the server process (``--child fake``), loaded with the corpus,
and the parent's handle on it (``FakeServer``), over a loopback control connection.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench import corpus, harness

FAKE_AUTHKEY_ENV = "POSTKAMER_BENCH_FAKE_AUTHKEY"


class FakeServer:
    """A fake Google or Microsoft (tests/support/fakes) serving in a process of its own.

    On a shared machine the fake's work must not share the GIL of the process
    being measured, so it runs apart, like Dovecot, and its CPU time is read from
    /proc. ``call`` talks to it over a loopback control connection
    (multiprocessing.connection, with an authkey from the environment).
    """

    def __init__(
        self, script: Path, provider: str, n: int, workdir: harness.Workdir, extra: list[str]
    ):
        os.environ.setdefault(FAKE_AUTHKEY_ENV, secrets.token_hex(16))
        self.address_file = workdir.root / f"fake-{provider}.json"
        self.address_file.unlink(missing_ok=True)
        command = [sys.executable, str(script), "--child", "fake", "--provider", provider]
        command += ["--fake-n", str(n), "--result-file", str(self.address_file), *extra]
        self.process = subprocess.Popen(command, cwd=harness.ROOT)
        deadline = time.monotonic() + 120
        while not self.address_file.exists() or not self.address_file.stat().st_size:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the fake {provider} server did not start")
            time.sleep(0.05)
        time.sleep(0.05)  # the file is written in one go; let it be closed
        self.control = tuple(json.loads(self.address_file.read_text())["control"])

    @property
    def pid(self) -> int:
        return self.process.pid

    def call(self, op: str, **arguments):
        return fake_call(self.control, op, **arguments)

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(OSError, EOFError):
                self.call("stop")
            try:
                self.process.wait(10)
            except Exception:
                self.process.kill()  # this process's own child, by its handle
                self.process.wait(10)


def fake_call(control: tuple[str, int], op: str, **arguments):
    """One command to a fake server's control connection; returns its answer."""
    from multiprocessing.connection import Client

    with Client(tuple(control), authkey=bytes.fromhex(os.environ[FAKE_AUTHKEY_ENV])) as conn:
        conn.send({"op": op, **arguments})
        answer = conn.recv()
    if isinstance(answer, dict) and answer.get("error"):
        raise RuntimeError(f"fake server: {answer['error']}")
    return answer


FAKE_LOAD_CHUNK = 500


def child_fake(args) -> None:
    """Serve a fake Google or Microsoft, loaded with the first N corpus messages.

    Runs until told to stop. Its control address goes to --result-file at once;
    the corpus is generated and loaded in the background ("wait_loaded")."""
    import cProfile
    import io
    import pstats
    from multiprocessing.connection import Listener

    harness.django_setup()  # tests.mailservers imports product modules
    work = harness.workdir_from_env()
    ca = harness.mail_ca(work)
    address = harness.TEAM_ADDRESS
    if args.provider == "gmail":
        from tests.support.fakes import google

        fake = google.FakeGoogle()
        fake.ca_file = str(work.ca_cert)
        fake.gzip_level = args.fake_gzip_level
        fake.start(ca.server_context(google.LOOPBACK, "localhost"))
        handler = google._Handler
        settings_env = {
            "GOOGLE_CLIENT_ID": google.CLIENT_ID,
            "GOOGLE_CLIENT_SECRET": google.CLIENT_SECRET,
            "GOOGLE_AUTH_URI": f"{fake.base_url}/o/oauth2/auth",
            "GOOGLE_TOKEN_URI": f"{fake.base_url}/token",
            "GMAIL_API_ENDPOINT": f"{fake.base_url}/",
            "GMAIL_BATCH_URI": f"{fake.base_url}/batch/gmail/v1",
        }

        def load(start: int, count: int, sizes: list[int]) -> None:
            fake.deliver_many(
                address,
                (
                    (raw, when.timestamp())
                    for raw, when in corpus.messages_with_dates(start, count, sizes)
                ),
            )

        def consent(url: str) -> dict:
            from urllib.parse import parse_qs, urlsplit

            query = urlsplit(fake.consent(url)).query
            return {k: v[0] for k, v in parse_qs(query).items()}

        def requests_seen() -> int:
            return len(fake.calls)

    else:
        from tests.support.fakes import microsoft

        fake = microsoft.FakeMicrosoft(ca).start()
        fake.add_user(address, "Bench Support")
        handler = microsoft._Handler
        settings_env = {
            "MICROSOFT_CLIENT_ID": fake.client_id,
            "MICROSOFT_CLIENT_SECRET": fake.client_secret,
            "MICROSOFT_AUTHORITY": fake.authority,
            "GRAPH_API_ENDPOINT": fake.graph_endpoint,
        }

        def load(start: int, count: int, sizes: list[int]) -> None:
            fake.deliver_many(address, corpus.messages_with_dates(start, count, sizes))

        def consent(url: str) -> dict:
            return fake.consent(url)

        def requests_seen() -> int:
            return len(fake.requests)

    settings_env["OAUTH_CA_FILE"] = str(work.ca_cert)

    # --profile-fake: every connection's thread under cProfile (TLS, HTTP, the fake's logic).
    profiles: list = []
    if args.profile_fake:
        original_handle = handler.handle

        def profiled_handle(self):
            profile = cProfile.Profile()
            profiles.append(profile)
            profile.enable()
            try:
                original_handle(self)
            finally:
                profile.disable()

        handler.handle = profiled_handle

    loaded = threading.Event()
    stats: dict = {}

    def load_corpus() -> None:
        sizes: list[int] = []
        started = time.perf_counter()
        for start in range(0, args.fake_n, FAKE_LOAD_CHUNK):
            load(start, min(FAKE_LOAD_CHUNK, args.fake_n - start), sizes)
        stats.update(corpus.size_stats(sizes, time.perf_counter() - started))
        loaded.set()

    threading.Thread(target=load_corpus, daemon=True).start()
    authkey = bytes.fromhex(os.environ[FAKE_AUTHKEY_ENV])
    listener = Listener(("127.0.0.1", 0), authkey=authkey)
    Path(args.result_file).write_text(json.dumps({"control": list(listener.address)}))
    stop = threading.Event()

    def answer(command: dict):
        op = command["op"]
        if op == "settings":
            return settings_env
        if op == "wait_loaded":
            loaded.wait()
            return stats
        if op == "consent":
            return consent(command["url"])
        if op == "deliver":
            t = time.perf_counter()
            load(command["start"], command["count"], [])
            return {"seconds": time.perf_counter() - t}
        if op == "requests":
            return requests_seen()
        if op == "profile":
            if not profiles:
                return ""
            out = io.StringIO()
            merged = pstats.Stats(profiles[0], stream=out)
            for profile in profiles[1:]:
                merged.add(profile)
            profiles.clear()
            merged.strip_dirs().sort_stats("tottime").print_stats(command.get("limit", 25))
            return out.getvalue()
        if op == "stop":
            stop.set()
            return "stopping"
        return {"error": f"unknown op {op!r}"}

    while not stop.is_set():
        with listener.accept() as conn:
            try:
                conn.send(answer(conn.recv()))
            except Exception as exc:  # reported to the caller; the fake keeps serving
                conn.send({"error": repr(exc)})
    listener.close()
    fake.stop()
