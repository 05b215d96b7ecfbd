"""What a mailbox's problem means, in plain words with the fix: the one place for it.

The engine stores what went wrong as the server and the libraries said it
(``Mailbox.last_error``, ``sync_last_error``, a connection test's failed step; the API
answers those unchanged). Every page that shows a mailbox's problem says it with
``plain_error`` instead: the mailbox rows and page, the connection test, the banner in
the inbox and its composer. ``mailbox_state`` is a mailbox's one badge and one message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from inboxes.models import Mailbox, MailboxStatus, SyncState


@dataclass(frozen=True)
class PlainError:
    """``reason``: what is wrong, as the end of "... can't be sent: <reason>";
    ``fix``: what to do about it."""

    reason: str
    fix: str

    @property
    def sentence(self) -> str:
        return f"{self.reason[:1].upper()}{self.reason[1:]}. {self.fix}".strip()


_HOST_NOT_FOUND = re.compile(r"could not find the mail server (\S+?)\.?(?:\s|$)", re.I)
_WHERE = re.compile(r"(?:connect to|to|at|with) (\[?[\w.:-]+\]?) port (\d+)", re.I)
_STEP = re.compile(r"^(dns|tcp|tls|auth|imap_select|smtp|security|greeting|ehlo): ", re.I)

_CHECK_SETTINGS = "Check the server, port and security settings, then test again."


def _where(text: str) -> tuple[str, str]:
    match = _WHERE.search(text)
    return (match.group(1), match.group(2)) if match else ("", "")


def _server(host: str) -> str:
    return f"the server {host}" if host else "the mail server"


def plain_error(error: str, *, step: str = "", server: str = "") -> PlainError:
    """``error`` as stored (``"auth: Login failed: ..."``, ``"IMAP login failed: ..."``),
    or a connection test's failed ``step`` (and ``server``: imap, smtp) with its detail."""
    text = " ".join((error or "").split())
    steps = []
    while (found := _STEP.match(text)) is not None:
        steps.append(found.group(1).lower())
        text = text[found.end() :]
    steps = [s for s in (step.lower(), *steps) if s]
    lower = text.lower()
    host, port = _where(text)
    if not text and not steps:
        return PlainError("the connection stopped working", "Test the connection to see why.")

    if (missing := _HOST_NOT_FOUND.search(text)) is not None:
        return PlainError(
            f"we couldn't find the server {missing.group(1)}",
            "Check the server name for typos.",
        )
    if "can't be used" in lower:  # netguard's refusal, which never says why
        return PlainError(
            "this server address can't be used",
            "Use the provider's public server name and a standard mail port.",
        )
    if "unencrypted" in lower or "security" in steps:
        return PlainError(
            "the connection would not be encrypted",
            "Choose SSL/TLS or STARTTLS as the security setting.",
        )
    if "token" in lower or "grant" in lower or "revoked" in lower or "sign in" in lower:
        return PlainError(
            "the sign-in has expired or was withdrawn",
            "Sign in again to reconnect it.",
        )
    if (
        "auth" in steps
        or "login failed" in lower
        or "authenticationfailed" in lower
        or "authentication failed" in lower
        or re.search(r"\b53[45]\b", text)
    ):
        which = "SMTP " if server == "smtp" or "smtp" in steps or "smtp" in lower else ""
        return PlainError(
            f"the {which}password was refused",
            "Enter the mailbox's current password (some providers need an app password) "
            "and test again.",
        )
    if "certificate" in lower:
        return PlainError(
            f"{_server(host)}'s security certificate could not be verified",
            "Check that the server name is the one on its certificate (ask the provider), "
            "then test again.",
        )
    if "wrong version number" in lower or "starttls" in lower:
        return PlainError(
            f"the secure connection to {_server(host)} failed: the port and the security "
            "setting don't match",
            "Use port 993 (IMAP) or 465 (SMTP) with SSL/TLS, or port 587 (SMTP) with STARTTLS.",
        )
    if "tls" in steps or "tls" in lower or "handshake" in lower:
        return PlainError(f"the secure connection to {_server(host)} failed", _CHECK_SETTINGS)
    if "timed out" in lower or "timeout" in lower:
        return PlainError(
            f"{_server(host)} did not answer in time",
            "Check the server name and port; if they are right, the server may be down "
            "for a while.",
        )
    if "refused" in lower and ("connect" in lower or "tcp" in steps):
        at = f" on port {port}" if port else ""
        return PlainError(
            f"{_server(host)} refused the connection{at}", "Check the port, then test again."
        )
    if "did not answer like" in lower or "did not greet" in lower or "greeting" in steps:
        return PlainError(
            f"{_server(host)} did not answer like a mail server on port {port or 'this port'}",
            "Check the port and the security setting.",
        )
    if "imap_select" in steps or "could not open inbox" in lower:
        return PlainError(
            "the mailbox's INBOX folder could not be opened",
            "Check that the user name is the mailbox itself, not an alias.",
        )
    if "connection problem" in lower or "tcp" in steps or "could not connect" in lower:
        return PlainError(f"we couldn't reach {_server(host)}", _CHECK_SETTINGS)
    return PlainError(
        text.rstrip(".") or "the connection stopped working",
        "Test the connection; if it keeps failing, ask an admin to check the settings.",
    )


def test_failure(result: dict[str, Any]) -> PlainError | None:
    """A failed connection test (``ConnectionTestResult.as_dict()``) in plain words."""
    failed = next((s for s in result.get("steps", []) if not s.get("ok")), None)
    if failed is None:
        return None
    return plain_error(failed["detail"], step=failed["step"], server=failed["server"])


@dataclass(frozen=True)
class MailboxState:
    """A mailbox's one badge (``css``, ``label``) and its one message (or None)."""

    css: str
    label: str
    problem: PlainError | None
    broken: bool  # it can't sync or send until someone fixes it

    @property
    def message(self) -> str:
        return self.problem.sentence if self.problem else ""


def mailbox_state(mailbox: Mailbox) -> MailboxState:
    """Never "Connected" beside an error: a failing sync that is being retried is
    "Retrying", a stopped one "Not working"; each with its error once, in plain words."""
    status = mailbox.status
    if status == MailboxStatus.DISCONNECTED:
        return MailboxState("disconnected", "Disconnected", None, broken=False)
    if status == MailboxStatus.NEEDS_REAUTH:
        # Only a sign-in (OAuth) can need one again: whatever the server said, that's the fix.
        error = mailbox.last_error or mailbox.sync_last_error
        reason = plain_error(error).reason if error else "the sign-in has expired"
        problem = PlainError(reason, "Sign in again to reconnect it.")
        return MailboxState("needs_reauth", "Reconnect needed", problem, broken=True)
    if status == MailboxStatus.ERROR:
        return MailboxState(
            "error",
            "Not working",
            plain_error(mailbox.last_error or mailbox.sync_last_error),
            broken=True,
        )
    if mailbox.sync_state == SyncState.ERROR and mailbox.sync_last_error:
        problem = plain_error(mailbox.sync_last_error)
        return MailboxState(
            "warning",
            "Retrying",
            PlainError(problem.reason, f"We keep trying. {problem.fix}"),
            broken=False,
        )
    return MailboxState("connected", "Connected", None, broken=False)


def is_broken(mailbox: Mailbox | None) -> bool:
    return mailbox is not None and mailbox.status in (
        MailboxStatus.ERROR,
        MailboxStatus.NEEDS_REAUTH,
    )
