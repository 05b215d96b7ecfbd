"""The provider interface: what sync and sending need from a mail service.

Keys and cursors are opaque to the services: a provider key names one message
in one folder (IMAP ``uidvalidity:uid``, a Gmail or Graph message id) and a
cursor is whatever JSON lets the provider list what changed since.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from email import policy
from email.parser import BytesHeaderParser
from email.utils import getaddresses
from typing import Protocol


class ProviderError(Exception):
    """Any failure talking to a provider.

    ``permanent``: retrying will not help (wrong password, 5xx SMTP answer);
    ``reauth``: the user must sign in again (revoked or expired grant).
    Everything else (network, timeouts, 4xx, 429, 5xx HTTP) is transient.
    """

    def __init__(self, message: str, *, permanent: bool = False, reauth: bool = False):
        super().__init__(message)
        self.permanent = permanent or reauth
        self.reauth = reauth


@dataclass(frozen=True)
class FolderSpec:
    role: str  # "inbox" | "sent" (inboxes.models.FolderRole)
    name: str


@dataclass
class Changes:
    """What to import from one folder, oldest first, and where to leave the cursor."""

    keys: list[str]
    cursor: dict
    reset: bool = False  # the stored cursor no longer applies: everything is listed again
    server_count: int | None = None
    partial_cursor: Callable[[str], dict] | None = None  # cursor once keys up to this one are in

    def cursor_after(self, key: str, previous: dict) -> dict:
        return self.partial_cursor(key) if self.partial_cursor else previous


@dataclass(frozen=True)
class RawMessage:
    key: str
    raw: bytes
    internal_date: datetime | None = None


@dataclass
class SendResult:
    accepted: bool
    detail: str
    refused: dict[str, str] = field(default_factory=dict)
    # Set when the provider replaced the Message-ID we wrote (some APIs assign their own).
    message_id: str = ""


class MailSession(Protocol):
    def __enter__(self) -> MailSession: ...

    def __exit__(self, *exc_info: object) -> None: ...

    def folders(self) -> list[FolderSpec]: ...

    def changes(self, folder: FolderSpec, cursor: dict, since: datetime | None) -> Changes: ...

    def fetch(self, folder: FolderSpec, keys: list[str]) -> Iterator[RawMessage]: ...

    def keys_since(
        self, folder: FolderSpec, since: datetime | None, before: datetime | None = None
    ) -> list[str]:
        """The keys of the messages in the folder received since ``since`` (None: all),
        oldest first. With ``before``, only those received before about then, for
        the part of a window that lies before ``before``: whatever the provider's
        unit (IMAP searches by day, Gmail by second), this listing and the one
        ``since=before`` together leave nothing out, and this one never reaches
        more than a second past ``before``."""
        ...

    def sent_folder(self) -> FolderSpec | None:
        """Where the mailbox keeps what it sent (to look for a send of unknown outcome)."""
        ...

    def find_message_id(self, folder: FolderSpec, message_id: str) -> bool: ...

    def store_sent_copy(self, raw: bytes) -> None:
        """Keep a copy of a sent message in the Sent folder (API providers do it themselves)."""
        ...


class SendOutcomeUnknown(ProviderError):
    """The message data went out but no answer came back: the server may have it."""

    def __init__(self, message: str, *, message_id: str = ""):
        super().__init__(message)
        self.message_id = message_id  # the provider's own Message-ID, if it assigned one


class MailTransport(Protocol):
    """Sends one message. ``before_data`` is called (and must be committed by the
    caller) right before the message content leaves, so a crash before that
    point is known to have sent nothing."""

    def __enter__(self) -> MailTransport: ...

    def __exit__(self, *exc_info: object) -> None: ...

    def send(
        self,
        raw: bytes,
        *,
        envelope_from: str,
        recipients: list[str],
        before_data: Callable[[], None],
    ) -> SendResult: ...


def with_bcc_header(raw: bytes, recipients: list[str]) -> bytes:
    """``raw`` with a Bcc field naming the envelope recipients its To and Cc leave out.

    SMTP has an envelope, so the message itself never names Bcc recipients. The Gmail
    and Graph send APIs have none: they deliver to the message's To, Cc and Bcc (and
    strip Bcc from what the recipients get), so Bcc must be in the bytes they take."""
    headers = BytesHeaderParser(policy=policy.compat32).parsebytes(raw)
    named = {
        address.lower()
        for _, address in getaddresses(
            [str(value) for field in ("To", "Cc") for value in headers.get_all(field) or []]
        )
    }
    hidden = [r for r in dict.fromkeys(recipients) if r.lower() not in named]
    if not hidden:
        return raw
    return b"Bcc: " + ",\r\n ".join(hidden).encode("ascii") + b"\r\n" + raw
