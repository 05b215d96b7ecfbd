"""A real CalDAV server for the tests: Radicale, started as a subprocess.

``python -m radicale`` listens on a free 127.0.0.1 port with its storage in a
temporary folder and one htpasswd user (plain text: it is a test). The fixture
waits until the port answers and stops the process by its PID afterwards.

Fixtures (register with ``pytest_plugins = ["tests.support.radicale"]``):
``radicale_server`` (one per session) and ``radicale`` (the same server, each test
with a user of its own so that calendars never leak between tests).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

HOST = "127.0.0.1"


@dataclass
class RadicaleUser:
    username: str
    password: str
    url: str  # the user's own collection root, e.g. http://127.0.0.1:5232/alice/


@dataclass
class Radicale:
    url: str
    folder: Path
    process: subprocess.Popen
    users: dict[str, str] = field(default_factory=dict)

    def add_user(self, username: str = "", password: str = "") -> RadicaleUser:
        """A new htpasswd user (Radicale re-reads the file: no restart needed)."""
        username = username or "user-" + secrets.token_hex(4)
        password = password or secrets.token_urlsafe(12)
        self.users[username] = password
        lines = "".join(f"{name}:{secret}\n" for name, secret in self.users.items())
        (self.folder / "htpasswd").write_text(lines)
        return RadicaleUser(username=username, password=password, url=f"{self.url}/{username}/")

    def make_calendar(self, user: RadicaleUser, name: str = "calendar") -> str:
        """Create a calendar collection for ``user`` (as a client would); its URL."""
        import caldav

        with caldav.DAVClient(url=user.url, username=user.username, password=user.password) as c:
            calendar = c.principal().make_calendar(name=name, cal_id=name)
            return str(calendar.url)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _wait_for(port: int, process: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"radicale exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.5):
            return
        time.sleep(0.1)
    raise RuntimeError("radicale did not start listening")


def start_radicale(folder: Path) -> Radicale:
    port = _free_port()
    (folder / "htpasswd").write_text("")
    (folder / "storage").mkdir(exist_ok=True)
    log = open(folder / "radicale.log", "wb")  # noqa: SIM115 - kept open while it runs
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "radicale",
            "--config",
            "",  # no system or user config files
            "--server-hosts",
            f"{HOST}:{port}",
            "--auth-type",
            "htpasswd",
            "--auth-htpasswd-filename",
            str(folder / "htpasswd"),
            "--auth-htpasswd-encryption",
            "plain",
            "--rights-type",
            "owner_only",
            "--storage-filesystem-folder",
            str(folder / "storage"),
            "--web-type",
            "none",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={k: v for k, v in os.environ.items() if not k.startswith("RADICALE")},
    )
    log.close()
    try:
        _wait_for(port, process)
    except BaseException:
        stop_radicale(process)
        raise
    return Radicale(url=f"http://{HOST}:{port}", folder=folder, process=process)


def stop_radicale(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@pytest.fixture(scope="session")
def radicale_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Radicale]:
    server = start_radicale(tmp_path_factory.mktemp("radicale"))
    try:
        yield server
    finally:
        stop_radicale(server.process)


@pytest.fixture
def radicale(radicale_server: Radicale) -> Radicale:
    return radicale_server
