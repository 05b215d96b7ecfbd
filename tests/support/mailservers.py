"""Real mail servers for the test suite: Dovecot (IMAP) and aiosmtpd (SMTP).

Both listen on free 127.0.0.1 ports with certificates from one throw-away
trustme CA, which the Django settings (and the environment, for subprocesses
such as a Celery worker) are told to trust. Register with
``pytest_plugins = ["tests.support.mailservers"]`` in the root conftest.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import pwd
import re
import secrets
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from inboxes.providers.imap.connection import ServerSettings

DOVECOT_BINARY = "/usr/sbin/dovecot"
LOCALHOST = "127.0.0.1"
SERVER_NAMES = ("127.0.0.1", "localhost")
_START_TIMEOUT = 10.0

_USERNAME_RE = re.compile(r"^[A-Za-z0-9._@+-]+$")


# --- TLS ---------------------------------------------------------------------------


@dataclass(frozen=True)
class MailCA:
    ca: trustme.CA
    path: Path  # the CA certificate (PEM) that clients trust

    def write_server_files(self, directory: Path, *names: str) -> tuple[Path, Path]:
        """Write a certificate chain and key for ``names``; returns (cert, key) paths."""
        leaf = self.ca.issue_cert(*(names or SERVER_NAMES))
        cert_path = directory / "server-cert.pem"
        key_path = directory / "server-key.pem"
        cert_path.write_bytes(b"".join(pem.bytes() for pem in leaf.cert_chain_pems))
        key_path.write_bytes(leaf.private_key_pem.bytes())
        key_path.chmod(0o600)
        return cert_path, key_path

    def server_context(self, *names: str) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert(*(names or SERVER_NAMES)).configure_cert(context)
        return context


@pytest.fixture(scope="session")
def mail_ca(tmp_path_factory: pytest.TempPathFactory) -> MailCA:
    ca = trustme.CA(organization_name="Postkamer test mail CA")
    path = tmp_path_factory.mktemp("mail-ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return MailCA(ca=ca, path=path)


@pytest.fixture(scope="session", autouse=True)
def _mail_tls_settings(mail_ca: MailCA) -> Iterator[None]:
    """Trust the test CA and allow loopback mail servers on any port.

    pytest-django's ``settings`` fixture is function-scoped, so the session
    values go straight onto django.conf.settings; tests can still override
    them per test with ``settings``.
    """
    from django.conf import settings

    values: dict[str, Any] = {
        "MAIL_TLS_CA_FILE": str(mail_ca.path),
        "ALLOW_PRIVATE_MAIL_HOSTS": True,
        "MAIL_ALLOWED_PORTS": [],
    }
    environ = {
        "MAIL_TLS_CA_FILE": str(mail_ca.path),
        "ALLOW_PRIVATE_MAIL_HOSTS": "true",
        "MAIL_ALLOWED_PORTS": "",
    }
    missing = object()
    saved_settings = {name: getattr(settings, name, missing) for name in values}
    saved_environ = {name: os.environ.get(name) for name in environ}
    for name, value in values.items():
        setattr(settings, name, value)
    os.environ.update(environ)
    yield
    for name, value in saved_settings.items():
        if value is missing:
            with contextlib.suppress(AttributeError):
                delattr(settings, name)
        else:
            setattr(settings, name, value)
    for name, value in saved_environ.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        return sock.getsockname()[1]


def _free_ports(count: int) -> list[int]:
    # Hold every socket until all are chosen so the kernel can't hand out one twice.
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((LOCALHOST, 0))
            socks.append(sock)
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def _wait_for_ports(
    ports: list[int], alive: Callable[[], bool], describe: Callable[[], str]
) -> None:
    deadline = time.monotonic() + _START_TIMEOUT
    waiting = list(ports)
    while waiting:
        if not alive():
            raise RuntimeError(f"mail server exited during start-up:\n{describe()}")
        try:
            with socket.create_connection((LOCALHOST, waiting[0]), timeout=0.5):
                waiting.pop(0)
                continue
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"mail server did not listen on {waiting}:\n{describe()}")
        time.sleep(0.02)


# --- DNS -------------------------------------------------------------------------------


class FakeDNS:
    """A stand-in for socket.getaddrinfo so tests never query a real resolver.

    Registered names answer with their addresses; numeric hosts ("127.1",
    "::1") and localhost go to the real getaddrinfo, which answers them without
    the network; every other name does not exist.
    """

    def __init__(self, real: Any) -> None:
        self._real = real
        self._answers: dict[str, collections.deque[tuple[str, ...]]] = {}
        self.calls: list[str] = []

    def add(self, name: str, *answers: str | tuple[str, ...]) -> None:
        """Register ``name``. Each answer is one address or a tuple of addresses;
        successive lookups get successive answers, the last one repeats."""
        if not answers:
            raise ValueError("give at least one answer")
        normalized = [(a,) if isinstance(a, str) else tuple(a) for a in answers]
        self._answers[name.lower().rstrip(".")] = collections.deque(normalized)

    def __call__(
        self, host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0
    ) -> list[tuple[Any, ...]]:
        name = host.decode() if isinstance(host, bytes) else host
        self.calls.append(name)
        key = (name or "").lower().rstrip(".")
        if key in self._answers:
            queue = self._answers[key]
            addresses = queue.popleft() if len(queue) > 1 else queue[0]
            return [self._info(address, port) for address in addresses]
        if key == "localhost":
            return self._real(host, port, family, type, proto, flags)
        try:
            return self._real(host, port, family, type, proto, flags | socket.AI_NUMERICHOST)
        except socket.gaierror:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None

    @staticmethod
    def _info(address: str, port: Any) -> tuple[Any, ...]:
        number = int(port) if port is not None else 0
        if ":" in address:
            return (
                socket.AF_INET6,
                socket.SOCK_STREAM,
                socket.IPPROTO_TCP,
                "",
                (address, number, 0, 0),
            )
        return (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, number))


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> FakeDNS:
    """Replace socket.getaddrinfo for one test; see FakeDNS."""
    resolver = FakeDNS(socket.getaddrinfo)
    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    return resolver


class ScriptedServer:
    """A tiny TCP server on 127.0.0.1 for playing minimal or broken mail servers.

    Each connection gets ``greeting`` (if any), then every received line is
    passed to ``reply``: bytes are sent back (b"" sends nothing), None closes
    the connection. ``connections`` counts accepted connections.
    """

    host = LOCALHOST

    def __init__(
        self, greeting: bytes | None, reply: Callable[[bytes], bytes | None] | None = None
    ) -> None:
        self.greeting = greeting
        self.reply = reply or (lambda line: b"")
        self.connections = 0
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind((LOCALHOST, 0))
        self._listener.listen()
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._clients: list[socket.socket] = []
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
            self.connections += 1
            self._clients.append(client)
            thread = threading.Thread(target=self._serve, args=(client,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, client: socket.socket) -> None:
        with contextlib.suppress(OSError), client:
            if self.greeting is not None:
                client.sendall(self.greeting)
            for line in client.makefile("rb"):
                answer = self.reply(line)
                if answer is None:
                    return
                if answer:
                    client.sendall(answer)

    def close(self) -> None:
        self._stopping.set()
        self._listener.close()
        for client in self._clients:
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)
        self._acceptor.join(timeout=2)
        for thread in self._threads:
            thread.join(timeout=2)

    def __enter__(self) -> ScriptedServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def imap_without_starttls() -> ScriptedServer:
    """An IMAP server that offers no STARTTLS (and lets nobody log in)."""
    capabilities = b"IMAP4rev1 AUTH=PLAIN"

    def reply(line: bytes) -> bytes | None:
        tag, _, command = line.strip().partition(b" ")
        verb = command.split(b" ", 1)[0].upper()
        if verb == b"CAPABILITY":
            return b"* CAPABILITY " + capabilities + b"\r\n" + tag + b" OK done\r\n"
        if verb == b"LOGOUT":
            return None
        return tag + b" NO not here\r\n"

    return ScriptedServer(b"* OK [CAPABILITY " + capabilities + b"] Fake ready\r\n", reply)


def smtp_without_starttls() -> ScriptedServer:
    """An SMTP server that offers AUTH but no STARTTLS."""

    def reply(line: bytes) -> bytes | None:
        verb = line.strip().split(b" ", 1)[0].upper()
        if verb == b"EHLO":
            return b"250-localhost\r\n250 AUTH PLAIN LOGIN\r\n"
        if verb == b"QUIT":
            return None
        return b"502 5.5.1 not here\r\n"

    return ScriptedServer(b"220 localhost ESMTP fake\r\n", reply)


# --- Dovecot -------------------------------------------------------------------------


def _user_ids(name: str) -> tuple[int, int] | None:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    return entry.pw_uid, entry.pw_gid


class DovecotServer:
    """A Dovecot instance in its own directory, with users added at run time."""

    host = LOCALHOST

    def __init__(self, root: Path, mail_ca: MailCA) -> None:
        self.root = root
        self.imaps_port, self.imap_port = _free_ports(2)
        self.users_dir = root / "users"
        self.log_path = root / "dovecot.log"
        self._users: dict[str, str] = {}
        self._lock = threading.Lock()
        self._delivery_counter = 0
        self.process: subprocess.Popen[bytes] | None = None

        if os.geteuid() == 0:
            # Dovecot refuses mail access as root and wants unprivileged users
            # for its own helper and login processes. The Debian package creates
            # dovecot and dovenull; mail belongs to nobody.
            self.internal_user = "dovecot" if _user_ids("dovecot") else "nobody"
            self.login_user = "dovenull" if _user_ids("dovenull") else "nobody"
            self.mail_uid, self.mail_gid = _user_ids("nobody") or (65534, 65534)
        else:
            me = pwd.getpwuid(os.getuid()).pw_name
            self.internal_user = self.login_user = me
            self.mail_uid, self.mail_gid = os.getuid(), os.getgid()
        self._internal_ids = _user_ids(self.internal_user)

        # Every process above must be able to walk into the directory.
        root.chmod(0o755)
        for sub in ("run", "state"):
            (root / sub).mkdir()
        self.users_dir.mkdir()
        if os.geteuid() == 0 and self._internal_ids:
            os.chown(self.users_dir, self._internal_ids[0], self._internal_ids[1])
        self.mail_root = root / "mail"
        self.mail_root.mkdir()
        self._chown_mail(self.mail_root)
        cert_path, key_path = mail_ca.write_server_files(root, *SERVER_NAMES)
        self.config_path = root / "dovecot.conf"
        self.config_path.write_text(self._config(cert_path, key_path))

    def _config(self, cert_path: Path, key_path: Path) -> str:
        dh = Path("/usr/share/dovecot/dh.pem")
        ssl_dh = f"ssl_dh = <{dh}\n" if dh.exists() else ""
        return f"""\
protocols = imap
listen = {LOCALHOST}
base_dir = {self.root / "run"}
state_dir = {self.root / "state"}
log_path = {self.log_path}
default_internal_user = {self.internal_user}
default_login_user = {self.login_user}
first_valid_uid = 1
first_valid_gid = 1
ssl = yes
ssl_cert = <{cert_path}
ssl_key = <{key_path}
{ssl_dh}ssl_min_protocol = TLSv1.2
# Loopback only; the tests also log in without TLS.
disable_plaintext_auth = no
auth_mechanisms = plain login
# The default 2 s pause after a failed login would slow every negative test.
auth_failure_delay = 0
# Keep user names exactly as added (the default lower-cases them).
auth_username_format = %u
mail_location = maildir:~/Maildir
mail_fsync = never
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {self.users_dir}/%u
}}
userdb {{
  driver = static
  args = uid={self.mail_uid} gid={self.mail_gid} home={self.mail_root}/%u
}}
service imap-login {{
  inet_listener imap {{
    address = {LOCALHOST}
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    address = {LOCALHOST}
    port = {self.imaps_port}
    ssl = yes
  }}
}}
"""

    # -- process

    def start(self) -> None:
        stderr = (self.root / "stderr.log").open("wb")
        try:
            self.process = subprocess.Popen(
                [DOVECOT_BINARY, "-F", "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=subprocess.STDOUT,
            )
        finally:
            stderr.close()
        try:
            self._disable_auth_penalty()
            _wait_for_ports(
                [self.imaps_port, self.imap_port],
                alive=lambda: self.process is not None and self.process.poll() is None,
                describe=self.describe,
            )
        except BaseException:
            self.stop()
            raise

    def _disable_auth_penalty(self) -> None:
        # Dovecot 2.3 delays every login from an IP after a failed one (2 s,
        # doubling), which makes negative tests slow and order-dependent, and
        # login_trusted_networks does not lift it. The auth process connects to
        # this socket once, when it starts (on the first connection to a login
        # port); finding it gone it runs without penalties. So remove it as soon
        # as the master has created it and before anything connects.
        # ("mode = 0" on the listener instead makes auth retry for 5 s.)
        socket_path = self.root / "run" / "anvil-auth-penalty"
        deadline = time.monotonic() + 2.0
        while not socket_path.exists() and time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                return
            time.sleep(0.005)
        with contextlib.suppress(FileNotFoundError):
            socket_path.unlink()

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def describe(self) -> str:
        parts = []
        for name in ("stderr.log", "dovecot.log"):
            path = self.root / name
            if path.exists():
                parts.append(f"--- {name}\n{path.read_text(errors='replace')[-4000:]}")
        return "\n".join(parts)

    # -- users

    def add_user(self, username: str, password: str) -> None:
        if not _USERNAME_RE.match(username):
            raise ValueError(f"unsupported test user name {username!r}")
        if any(ch in password for ch in ":\r\n\x00"):
            raise ValueError("a passwd-file password cannot contain ':' or line breaks")
        with self._lock:
            if self._users.get(username) == password:
                return
            self._users[username] = password
            self._write_passwd(username, password)

    def _write_passwd(self, username: str, password: str) -> None:
        # One passwd-file per user: Dovecot stats a passwd-file at most once a
        # second, so a user appended to a shared file right after a login would
        # be unknown for up to a second. A new file is read on first use.
        path = self.users_dir / username
        tmp = self.users_dir / f".{username}.tmp"
        tmp.write_text(f"{username}:{{PLAIN}}{password}::::::\n")
        tmp.chmod(0o600)
        if os.geteuid() == 0 and self._internal_ids:
            # Dovecot's auth process runs as the internal user and reads this file.
            os.chown(tmp, self._internal_ids[0], self._internal_ids[1])
        changed = path.exists()
        os.replace(tmp, path)
        if changed:
            # A known file is only re-read when its mtime (whole seconds) or size
            # changed and a second has passed since the last check.
            stamp = max(time.time(), path.stat().st_mtime + 1)
            os.utime(path, (stamp, stamp))
            time.sleep(1.05)

    # -- mail

    def maildir(self, username: str) -> Path:
        return self.mail_root / username / "Maildir"

    def _chown_mail(self, path: Path) -> None:
        if os.geteuid() == 0:
            os.chown(path, self.mail_uid, self.mail_gid)

    def _ensure_dir(self, path: Path) -> None:
        missing = []
        while not path.exists():
            missing.append(path)
            path = path.parent
        for directory in reversed(missing):
            directory.mkdir(mode=0o700)
            self._chown_mail(directory)

    def deliver(self, username: str, raw_bytes: bytes, folder: str = "INBOX") -> Path:
        """Put a message into the user's Maildir the way a delivery agent would.

        ``raw_bytes`` is stored unchanged (Dovecot serves LF files with CRLF).
        """
        base = self.maildir(username)
        if folder.upper() != "INBOX":
            # Maildir++: every folder is a dot-directory, "/" becomes ".".
            base = base / ("." + folder.replace("/", "."))
        for sub in ("cur", "new", "tmp"):
            self._ensure_dir(base / sub)
        with self._lock:
            self._delivery_counter += 1
            counter = self._delivery_counter
        now = time.time()
        name = f"{int(now)}.M{int(now * 1e6) % 1_000_000}P{os.getpid()}Q{counter}.postkamer-tests"
        tmp = base / "tmp" / name
        tmp.write_bytes(raw_bytes)
        tmp.chmod(0o600)
        self._chown_mail(tmp)
        final = base / "new" / name
        # rename() is what makes a Maildir delivery atomic for the reader.
        os.rename(tmp, final)
        return final

    def imap_settings(self, username: str, password: str, security: str = "ssl") -> ServerSettings:
        port = self.imaps_port if security == "ssl" else self.imap_port
        return ServerSettings(
            host=self.host, port=port, security=security, username=username, password=password
        )


@pytest.fixture(scope="session")
def dovecot(mail_ca: MailCA, _mail_tls_settings: None) -> Iterator[DovecotServer]:
    if not Path(DOVECOT_BINARY).exists():
        pytest.skip("Dovecot is not installed (Debian package dovecot-imapd)")
    root = Path(tempfile.mkdtemp(prefix="postkamer-dovecot-"))
    server = DovecotServer(root, mail_ca)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


# --- SMTP ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceivedMessage:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    login: str | None  # the AUTH user, None if the client did not log in
    tls: bool


class _Handler:
    def __init__(self, owner: SMTPTestServer) -> None:
        self.owner = owner

    async def handle_MAIL(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        failure = self.owner._take_failure("mail")
        if failure:
            return failure
        fault = self.owner._take_fault("mail")
        if fault is not None:
            await self.owner._hold(server, fault[1])
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        raw = envelope.original_content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        transport = server.transport
        message = ReceivedMessage(
            mail_from=envelope.mail_from or "",
            rcpt_tos=tuple(envelope.rcpt_tos),
            data=raw,
            login=session.auth_data if session.authenticated else None,
            tls=transport is not None and transport.get_extra_info("ssl_object") is not None,
        )
        failure = self.owner._take_failure("data")
        if failure:
            self.owner._record(message, accepted=False)
            return failure
        # From here on the server has the message (as a real MTA that queued
        # it), whether or not its answer ever reaches the client.
        self.owner._record(message, accepted=True)
        self.owner._report_refusals(message)
        fault = self.owner._take_fault("data")
        if fault is not None and fault[0] == "hold":
            await self.owner._hold(server, fault[1])
        elif fault is not None and fault[0] == "drop":
            await self.owner._drop(server)
        return "250 OK: queued"


class SMTPTestServer:
    """aiosmtpd with STARTTLS (``port``), implicit TLS (``smtps_port``) and AUTH."""

    host = LOCALHOST

    def __init__(self, mail_ca: MailCA) -> None:
        self._users: dict[str, str] = {}
        self._lock = threading.Condition()
        self._messages: list[ReceivedMessage] = []
        self._rejected: list[ReceivedMessage] = []
        self._failures: collections.deque[tuple[str, str]] = collections.deque()
        # (stage, (kind, seconds)) for hold_*/drop_after_data
        self._faults: collections.deque[tuple[str, tuple[str, float]]] = collections.deque()
        self._holds_started = 0
        self._drops = 0
        # Recipients the next hop refuses after this server queued the mail: their
        # delivery report goes back to the sender's mailbox (refuse_later).
        self._refusals: dict[str, tuple[str, str, Callable[[bytes], object]]] = {}
        self._releases = 0  # release_holds() ends the holds begun before it
        self.port, self.smtps_port = _free_ports(2)
        handler = _Handler(self)
        common: dict[str, Any] = {
            "hostname": LOCALHOST,
            # Without a name aiosmtpd calls socket.getfqdn(), which can stall.
            "server_hostname": "localhost",
            "authenticator": self._authenticate,
            "auth_require_tls": False,
            "ready_timeout": _START_TIMEOUT,
        }
        self._controllers = [
            Controller(
                handler,
                port=self.port,
                tls_context=mail_ca.server_context(*SERVER_NAMES),
                require_starttls=False,
                **common,
            ),
            Controller(
                handler,
                port=self.smtps_port,
                ssl_context=mail_ca.server_context(*SERVER_NAMES),
                **common,
            ),
        ]

    def start(self) -> None:
        started = []
        try:
            for controller in self._controllers:
                controller.start()
                started.append(controller)
        except BaseException:
            for controller in started:
                controller.stop()
            raise

    def stop(self) -> None:
        for controller in self._controllers:
            with contextlib.suppress(AssertionError, RuntimeError):
                controller.stop()

    # -- auth

    def add_user(self, username: str, password: str) -> None:
        with self._lock:
            self._users[username] = password

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            login = auth_data.login.decode("utf-8", "replace")
            password = auth_data.password.decode("utf-8", "replace")
            with self._lock:
                expected = self._users.get(login)
            if expected is not None and secrets.compare_digest(
                expected.encode("utf-8"), password.encode("utf-8")
            ):
                return AuthResult(success=True, auth_data=login)
        # handled=False lets aiosmtpd answer "535 5.7.8 Authentication credentials invalid".
        return AuthResult(success=False, handled=False)

    # -- failures and messages

    def refuse_later(
        self, address: str, *, status: str, text: str, report_to: Callable[[bytes], object]
    ) -> None:
        """Accept mail for ``address`` (the submission server queues it), then act as the
        MTA whose next hop refused it: compose an RFC 3464 delivery report (status,
        the remote server's ``text``, the original's headers) and hand it to
        ``report_to`` (e.g. a Dovecot delivery into the sender's mailbox)."""
        with self._lock:
            self._refusals[address.lower()] = (status, text, report_to)

    def _report_refusals(self, message: ReceivedMessage) -> None:
        from tests.support.mail import compose_dsn

        for recipient in message.rcpt_tos:
            with self._lock:
                refusal = self._refusals.get(recipient.lower())
            if refusal is not None:
                status, text, report_to = refusal
                report_to(
                    compose_dsn(
                        message.data,
                        sender=message.mail_from,
                        recipient=recipient,
                        status=status,
                        diagnostic=text,
                    )
                )

    def fail_next(self, code: int, text: str, count: int = 1, stage: str = "data") -> None:
        """Make the next ``count`` transactions answer ``code text`` at ``stage``.

        stage "data" rejects after the message was sent (it lands in ``rejected``);
        stage "mail" rejects MAIL FROM, before any content.
        """
        if stage not in ("mail", "data"):
            raise ValueError("stage must be 'mail' or 'data'")
        with self._lock:
            self._failures.extend([(stage, f"{code} {text}")] * count)

    def _take_failure(self, stage: str) -> str | None:
        with self._lock:
            if self._failures and self._failures[0][0] == stage:
                return self._failures.popleft()[1]
        return None

    # -- faults: the server that goes quiet or hangs up

    def hold_mail_reply(self, seconds: float, count: int = 1) -> None:
        """Make the next ``count`` transactions wait ``seconds`` before answering
        MAIL FROM (nothing of the message has been sent yet)."""
        self._add_fault("mail", "hold", seconds, count)

    def hold_data_reply(self, seconds: float, count: int = 1) -> None:
        """Make the next ``count`` transactions wait ``seconds`` before answering
        the final "." of DATA. The message counts as received (``messages``)
        from the moment its data arrived, as with an MTA that had queued it."""
        self._add_fault("data", "hold", seconds, count)

    def drop_after_data(self, count: int = 1) -> None:
        """Make the next ``count`` transactions take the message data (it counts
        as received) and then close the connection without answering."""
        self._add_fault("data", "drop", 0.0, count)

    def _add_fault(self, stage: str, kind: str, seconds: float, count: int) -> None:
        with self._lock:
            self._faults.extend([(stage, (kind, float(seconds)))] * count)

    def _take_fault(self, stage: str) -> tuple[str, float] | None:
        """The first pending fault of ``stage`` (faults of other stages stay queued)."""
        with self._lock:
            for index, (fault_stage, fault) in enumerate(self._faults):
                if fault_stage == stage:
                    del self._faults[index]
                    return fault
        return None

    async def _hold(self, server: SMTP, seconds: float) -> None:
        with self._lock:
            self._holds_started += 1
            self._lock.notify_all()
            releases = self._releases
        deadline = time.monotonic() + seconds
        # Ends early when the client went away (aiosmtpd then also cancels us)
        # or release_holds() was called.
        while time.monotonic() < deadline and self._releases == releases:
            transport = server.transport
            if transport is None or transport.is_closing():
                return
            await asyncio.sleep(0.02)

    async def _drop(self, server: SMTP) -> None:
        with self._lock:
            self._drops += 1
            self._lock.notify_all()
        if server.transport is not None:
            server.transport.close()
        # aiosmtpd cancels this handler once it sees the connection gone.
        deadline = time.monotonic() + 5
        while server.transport is not None and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    @property
    def holds_started(self) -> int:
        """How many hold_* waits have begun since the last clear()."""
        with self._lock:
            return self._holds_started

    @property
    def drops(self) -> int:
        """How many connections drop_after_data() closed since the last clear()."""
        with self._lock:
            return self._drops

    def wait_for_hold(self, count: int = 1, timeout: float = 10.0) -> None:
        """Wait until at least ``count`` hold_* waits have begun since the last clear()."""
        with self._lock:
            if not self._lock.wait_for(lambda: self._holds_started >= count, timeout):
                raise TimeoutError(f"expected {count} held replies, got {self._holds_started}")

    def release_holds(self) -> None:
        """End every current hold now (each then answers as it would have)."""
        with self._lock:
            self._releases += 1

    def _record(self, message: ReceivedMessage, *, accepted: bool) -> None:
        with self._lock:
            (self._messages if accepted else self._rejected).append(message)
            self._lock.notify_all()

    @property
    def messages(self) -> list[ReceivedMessage]:
        """Accepted messages, oldest first (a copy)."""
        with self._lock:
            return list(self._messages)

    @property
    def rejected(self) -> list[ReceivedMessage]:
        """Messages whose DATA was answered with a fail_next() code."""
        with self._lock:
            return list(self._rejected)

    def wait_for_messages(self, count: int, timeout: float = 10.0) -> list[ReceivedMessage]:
        """Wait until at least ``count`` messages were accepted (for async senders)."""
        with self._lock:
            if not self._lock.wait_for(lambda: len(self._messages) >= count, timeout):
                raise TimeoutError(f"expected {count} messages, got {len(self._messages)}")
            return list(self._messages)

    def clear(self) -> None:
        with self._lock:
            self._messages.clear()
            self._rejected.clear()
            self._failures.clear()
            self._faults.clear()
            self._holds_started = 0
            self._drops = 0
            self._releases += 1

    def smtp_settings(
        self, username: str, password: str, security: str = "starttls"
    ) -> ServerSettings:
        port = self.smtps_port if security == "ssl" else self.port
        return ServerSettings(
            host=self.host, port=port, security=security, username=username, password=password
        )


@pytest.fixture(scope="session")
def smtp_server(mail_ca: MailCA, _mail_tls_settings: None) -> Iterator[SMTPTestServer]:
    server = SMTPTestServer(mail_ca)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def mail_user(dovecot: DovecotServer, smtp_server: SMTPTestServer) -> tuple[str, str]:
    """A fresh user known to both Dovecot and the SMTP server: (username, password)."""
    username = f"u{uuid.uuid4().hex[:16]}"
    password = secrets.token_urlsafe(16)
    dovecot.add_user(username, password)
    smtp_server.add_user(username, password)
    return username, password
