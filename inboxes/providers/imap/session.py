"""IMAP for reading, SMTP for sending, with imapclient and smtplib.

Reading is non-destructive: folders are selected read-only and messages are
fetched with BODY.PEEK[], so no flag changes and nothing moves or is deleted.
Keys are ``uidvalidity:uid``: a UID means nothing once the folder's UIDVALIDITY
changes, and the cursor then resets (the sync service deduplicates by content).
"""

from __future__ import annotations

import contextlib
import imaplib
import smtplib
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from datetime import datetime

import imapclient
from imapclient.exceptions import IMAPClientError, LoginError
from imapclient.imapclient import SEEN, SENT

from inboxes import netguard
from inboxes.mailconn import open_imap, open_smtp
from inboxes.models import AuthMethod, FolderRole, Mailbox, MailboxKind
from inboxes.providers.base import (
    Changes,
    FolderSpec,
    ProviderError,
    RawMessage,
    SendOutcomeUnknown,
    SendResult,
)

# Fetch at most this many messages, or about this many bytes, per round trip:
# bounded memory whatever the mailbox holds (a bigger message comes alone). The
# sync ingests batches of the same bounds (inboxes/sync.py), so each round trip
# is one ingest batch.
FETCH_BATCH_MESSAGES = 100
FETCH_BATCH_BYTES = 1536 * 1024
SENT_FOLDER_FALLBACKS = ("Sent", "Sent Items", "Sent Messages", "INBOX.Sent", "[Gmail]/Sent Mail")

_TRANSIENT = (OSError, socket.timeout, ssl.SSLError, imaplib.IMAP4.abort, EOFError)


def _text(value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def imap_error(exc: BaseException) -> ProviderError:
    """Map an exception from imapclient/the network onto our one error type."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, LoginError):
        return ProviderError(f"IMAP login failed: {_text(exc)}", permanent=True)
    if isinstance(exc, netguard.HostNotAllowed):
        return ProviderError(str(exc), permanent=True)
    if isinstance(exc, netguard.HostNotFound):
        return ProviderError(str(exc))
    if isinstance(exc, _TRANSIENT):
        return ProviderError(f"IMAP connection problem: {exc or type(exc).__name__}")
    if isinstance(exc, IMAPClientError):
        return ProviderError(f"IMAP server error: {_text(exc)}")
    return ProviderError(f"IMAP error: {exc!r}")


def _uid_of(key: str) -> int:
    return int(key.rsplit(":", 1)[1])


# --- XOAUTH2 ------------------------------------------------------------------------------------

# Where an XOAUTH2 login gets its access token: called once per login attempt.
TokenSource = Callable[[], str]


def xoauth2_string(username: str, access_token: str) -> str:
    """The XOAUTH2 initial client response (before base64), as Gmail and Microsoft document it."""
    return f"user={username}\x01auth=Bearer {access_token}\x01\x01"


def smtp_xoauth2_login(smtp: smtplib.SMTP, username: str, access_token: str) -> None:
    """AUTH XOAUTH2 with an initial response; smtplib base64-encodes it.

    A refusal comes as a 334 challenge carrying a JSON error, to be answered
    with an empty line before the final 535: hence "" for any challenge.
    Raises smtplib.SMTPNotSupportedError if the server does not offer XOAUTH2
    and smtplib.SMTPAuthenticationError if it refuses the token.
    """
    smtp.ehlo_or_helo_if_needed()
    offered = (smtp.esmtp_features.get("auth") or "").upper().split()
    if "XOAUTH2" not in offered:
        raise smtplib.SMTPNotSupportedError("The SMTP server does not offer XOAUTH2 sign-in.")
    initial = xoauth2_string(username, access_token)
    smtp.auth("XOAUTH2", lambda challenge=None: initial if challenge is None else "")


# Answers to AUTHENTICATE that say "not now" rather than "not this token" (RFC 5530).
_IMAP_TRANSIENT_CODES = ("[UNAVAILABLE]", "[SERVERBUG]", "[LIMIT]", "[INUSE]")


def imap_xoauth2_attempt(client: imapclient.IMAPClient, username: str, token: str) -> None:
    """AUTHENTICATE XOAUTH2. Raises LoginError only when the server refused the
    token; a dropped connection or a temporary failure is a transient ProviderError."""
    try:
        client.oauth2_login(username, token)
    except LoginError as exc:
        # imapclient turns every error of the command into LoginError, a
        # dropped connection (imaplib's abort) included.
        if isinstance(exc.__context__, imaplib.IMAP4.abort):
            raise ProviderError(f"IMAP connection problem: {_text(exc)}") from exc
        if any(code in _text(exc).upper() for code in _IMAP_TRANSIENT_CODES):
            raise ProviderError(
                f"The IMAP server could not check the sign-in token now: {_text(exc)}"
            ) from exc
        raise


def _imap_xoauth2_refusal(exc: BaseException) -> str | None:
    """The server's words when it refused the token; None for any other failure."""
    return _text(exc) if isinstance(exc, LoginError) else None


def smtp_xoauth2_attempt(smtp: smtplib.SMTP, username: str, token: str) -> None:
    """AUTH XOAUTH2; a 4xx answer (try later) is a transient ProviderError, a
    server without XOAUTH2 a permanent one."""
    try:
        smtp_xoauth2_login(smtp, username, token)
    except smtplib.SMTPNotSupportedError as exc:
        raise ProviderError(str(exc), permanent=True) from exc
    except smtplib.SMTPAuthenticationError as exc:
        if 400 <= exc.smtp_code < 500:
            raise ProviderError(
                "The SMTP server could not check the sign-in token now: "
                + _reply_text(exc.smtp_code, exc.smtp_error)
            ) from exc
        raise


def _smtp_xoauth2_refusal(exc: BaseException) -> str | None:
    # 535 bad credentials, 534 "log in with your web browser"; 504 (no such
    # mechanism) and the rest are not a verdict on the token.
    if isinstance(exc, smtplib.SMTPAuthenticationError) and exc.smtp_code in (534, 535):
        return _reply_text(exc.smtp_code, exc.smtp_error)
    return None


class _LazyOAuthClient:
    """The sign-in provider's OAuth client, made only when a refresh is needed:
    a login with a fresh stored token does not depend on the provider module."""

    def __init__(self, provider: str) -> None:
        self._provider = provider

    def refresh(self, tokens):
        from core.errors import Invalid
        from inboxes import oauth

        try:
            client = oauth.oauth_client(self._provider)
        except Invalid as exc:
            raise ProviderError(
                f"This mailbox signs in with an unknown provider ({self._provider!r}).",
                permanent=True,
            ) from exc
        return client.refresh(tokens)


def stored_token_source(mailbox: Mailbox) -> TokenSource:
    """Access tokens from the mailbox's stored OAuth tokens, refreshed when about to
    expire (one refresh per mailbox at a time, rotated tokens committed at once)."""
    from inboxes import oauth

    client = _LazyOAuthClient(mailbox.oauth_provider)
    return lambda: oauth.access_token_for(mailbox, client=client)


def expire_stored_token(mailbox: Mailbox, access_token: str) -> None:
    """Mark the stored access token expired (the server refused it), so the next
    ``access_token_for`` refreshes. A token another worker has replaced meanwhile
    is left alone: only the refused one is expired."""
    from django.db import transaction

    from inboxes import oauth

    with transaction.atomic():
        row = (
            Mailbox.objects.select_for_update()
            .only("id", "account_id", "secrets_ciphertext")
            .get(pk=mailbox.pk)
        )
        tokens = oauth.tokens_load(row)
        if tokens.access_token != access_token or not tokens.expires_at:
            return
        tokens.expires_at = 0
        oauth.tokens_store(row, tokens)


def xoauth2_login(
    mailbox: Mailbox,
    protocol: str,
    token_source: TokenSource | None,
    attempt: Callable[[str], None],
    refusal: Callable[[BaseException], str | None],
) -> None:
    """Log in with an access token; if the server refuses it, once more with a fresh one.

    ``attempt(token)`` logs in or raises; ``refusal(exc)`` tells a refused token
    (the server's words) from any other failure, which is raised as it is. With
    the stored tokens (no ``token_source``) the refused token is expired so a
    fresh one is fetched, and a second refusal marks the mailbox needs_reauth.
    A ``token_source`` is simply asked again for the second try.
    """
    stored = token_source is None
    source = stored_token_source(mailbox) if stored else token_source
    words: str | None = ""
    for attempt_number in (1, 2):
        token = source()
        try:
            attempt(token)
            return
        except Exception as exc:
            words = refusal(exc)
            if words is None:
                raise
        if attempt_number == 1 and stored:
            expire_stored_token(mailbox, token)
    reason = (
        f"The {protocol} server refused the sign-in token, also after a refresh ({words}). "
        "Sign in again to reconnect this mailbox."
    )
    if stored:
        from inboxes import oauth

        oauth.mark_needs_reauth(mailbox, reason)
    raise ProviderError(reason, reauth=True)


class ImapSession:
    """A logged-in IMAP connection for one mailbox (a context manager)."""

    def __init__(
        self,
        mailbox: Mailbox,
        *,
        timeout: float | None = None,
        token_source: TokenSource | None = None,
    ) -> None:
        """``token_source`` replaces the stored OAuth tokens of an XOAUTH2 mailbox."""
        from inboxes.services import mailbox_server_inputs

        self.mailbox = mailbox
        imap, _ = mailbox_server_inputs(mailbox)
        self._server = imap.settings()
        self._timeout = timeout
        self._token_source = token_source
        self.client: imapclient.IMAPClient | None = None
        self._selected: str | None = None
        self._watched_uidnext: int | None = None
        self._reused = False  # lent by the watcher, no command run since

    def __enter__(self) -> ImapSession:
        try:
            self.client = open_imap(self._server, self._timeout)
            self._login(self.client)
            if self.client.has_capability("CONDSTORE"):
                with contextlib.suppress(IMAPClientError):
                    self.client.enable("CONDSTORE")
        except BaseException as exc:
            self._close()
            raise imap_error(exc) from exc
        return self

    def _login(self, client: imapclient.IMAPClient) -> None:
        username = self._server.username
        if self.mailbox.auth_method != AuthMethod.XOAUTH2:
            client.login(username, self._server.password)
            return
        if not client.has_capability("AUTH=XOAUTH2"):
            raise ProviderError("The IMAP server does not offer XOAUTH2 sign-in.", permanent=True)
        xoauth2_login(
            self.mailbox,
            "IMAP",
            self._token_source,
            lambda token: imap_xoauth2_attempt(client, username, token),
            _imap_xoauth2_refusal,
        )

    def __exit__(self, *exc_info) -> None:
        self._close()

    def _close(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.client.logout()
            with contextlib.suppress(Exception):
                self.client.shutdown()
            self.client = None

    @property
    def fingerprint(self) -> tuple:
        """What the login depends on: a lent session serves a sync only while it is unchanged."""
        return (str(self.mailbox.pk), self.mailbox.auth_method, self._server)

    # --- folders -------------------------------------------------------------------------

    def folders(self) -> list[FolderSpec]:
        folders = [FolderSpec(FolderRole.INBOX, "INBOX")]
        if self.mailbox.kind == MailboxKind.PERSONAL:
            sent = self.sent_folder_name()
            if sent:
                folders.append(FolderSpec(FolderRole.SENT, sent))
        return folders

    def sent_folder(self) -> FolderSpec | None:
        name = self.sent_folder_name()
        return FolderSpec(FolderRole.SENT, name) if name else None

    def sent_folder_name(self) -> str | None:
        assert self.client is not None
        try:
            special = self.client.find_special_folder(SENT)
            if special:
                return special
            names = {_text(name) for _flags, _delim, name in self.client.list_folders()}
        except BaseException as exc:
            raise imap_error(exc) from exc
        return next((name for name in SENT_FOLDER_FALLBACKS if name in names), None)

    def _select(self, name: str) -> dict:
        assert self.client is not None
        try:
            info = self.client.select_folder(name, readonly=True)
        except Exception:
            if not self._reused:
                raise
            # A session logged in long ago may hold server state that went stale
            # meanwhile (a folder restored under it): one fresh login before giving up.
            self._reused = False
            self._close()
            self.__enter__()
            info = self.client.select_folder(name, readonly=True)
        self._reused = False
        self._selected = name
        return info

    # --- reading --------------------------------------------------------------------------

    def changes(self, folder: FolderSpec, cursor: dict, since: datetime | None) -> Changes:
        try:
            return self._changes(folder, cursor, since)
        except BaseException as exc:
            raise imap_error(exc) from exc

    def _changes(self, folder: FolderSpec, cursor: dict, since: datetime | None) -> Changes:
        assert self.client is not None
        info = self._select(folder.name)
        uidvalidity = int(info[b"UIDVALIDITY"])
        uidnext = int(info.get(b"UIDNEXT", 0) or 0)
        modseq = int(info[b"HIGHESTMODSEQ"]) if b"HIGHESTMODSEQ" in info else None
        exists = int(info.get(b"EXISTS", 0))
        reset = bool(cursor) and cursor.get("uidvalidity") != uidvalidity
        last_uid = 0 if reset or not cursor else int(cursor.get("last_uid", 0))

        def cursor_for(uid: int) -> dict:
            return {
                "uidvalidity": uidvalidity,
                "last_uid": uid,
                "uidnext": uidnext,
                "modseq": modseq,
            }

        unchanged = (
            cursor
            and not reset
            and uidnext
            and cursor.get("uidnext") == uidnext
            and (modseq is None or cursor.get("modseq") == modseq)
        )
        if unchanged or exists == 0:
            return Changes(
                keys=[], cursor=cursor_for(max(last_uid, uidnext - 1, 0)), server_count=exists
            )
        if last_uid:
            uids = [
                uid for uid in self.client.search(["UID", f"{last_uid + 1}:*"]) if uid > last_uid
            ]
        elif since is not None:
            uids = self.client.search(["SINCE", since.date()])
        else:
            uids = self.client.search("ALL")
        uids = sorted(uids)
        final = cursor_for(max([last_uid, *uids]))
        return Changes(
            keys=[f"{uidvalidity}:{uid}" for uid in uids],
            cursor=final,
            reset=reset,
            server_count=exists,
            # A partial cursor must not carry the folder's UIDNEXT/HIGHESTMODSEQ: with
            # them, a sync interrupted here would next find the folder "unchanged"
            # and never fetch the rest.
            partial_cursor=lambda key: {
                **cursor_for(_uid_of(key)),
                "uidnext": None,
                "modseq": None,
            },
        )

    def keys_since(self, folder: FolderSpec, since: datetime | None) -> list[str]:
        """Every message key the server holds in the folder (for reconciliation)."""
        try:
            info = self._select(folder.name)
            criteria = ["SINCE", since.date()] if since else "ALL"
            uidvalidity = int(info[b"UIDVALIDITY"])
            return [f"{uidvalidity}:{uid}" for uid in sorted(self.client.search(criteria))]
        except BaseException as exc:
            raise imap_error(exc) from exc

    def fetch(self, folder: FolderSpec, keys: list[str]) -> Iterator[RawMessage]:
        """Raw messages in batches bounded by count and size, without touching flags."""
        for batch in self.fetch_batches(folder, keys):
            yield from batch

    def fetch_batches(self, folder: FolderSpec, keys: list[str]) -> Iterator[list[RawMessage]]:
        """The messages of ``keys``, one list per round trip (at most FETCH_BATCH_MESSAGES
        or about FETCH_BATCH_BYTES; a bigger message alone), each as soon as it is in."""
        if not keys:
            return
        assert self.client is not None
        try:
            if self._selected != folder.name:
                self._select(folder.name)
            uids = [_uid_of(key) for key in keys]
            prefix = keys[0].rsplit(":", 1)[0]
            sizes = self.client.fetch(uids, ["RFC822.SIZE"])
            batch: list[int] = []
            batch_bytes = 0
            for uid in uids:
                if uid not in sizes:
                    continue  # expunged since it was listed
                size = int(sizes[uid].get(b"RFC822.SIZE", 0))
                if batch and (
                    len(batch) >= FETCH_BATCH_MESSAGES or batch_bytes + size > FETCH_BATCH_BYTES
                ):
                    yield self._fetch_batch(prefix, batch)
                    batch, batch_bytes = [], 0
                batch.append(uid)
                batch_bytes += size
            if batch:
                yield self._fetch_batch(prefix, batch)
        except (ProviderError, GeneratorExit):
            raise
        except BaseException as exc:
            raise imap_error(exc) from exc

    def _fetch_batch(self, prefix: str, uids: list[int]) -> list[RawMessage]:
        assert self.client is not None
        response = self.client.fetch(uids, ["BODY.PEEK[]", "INTERNALDATE"])
        batch = []
        for uid in uids:
            data = response.pop(uid, None)
            if data is None or b"BODY[]" not in data:
                continue
            batch.append(
                RawMessage(
                    key=f"{prefix}:{uid}",
                    raw=data[b"BODY[]"],
                    internal_date=data.get(b"INTERNALDATE"),
                )
            )
        return batch

    def find_message_id(self, folder: FolderSpec, message_id: str) -> bool:
        try:
            self._select(folder.name)
            return bool(self.client.search(["HEADER", "Message-ID", message_id]))
        except BaseException as exc:
            raise imap_error(exc) from exc

    def store_sent_copy(self, raw: bytes) -> None:
        """Append what we sent to the Sent folder, as a mail client would."""
        name = self.sent_folder_name()
        try:
            if not name:
                # As a mail client does on its first send: make the Sent folder.
                name = "Sent"
                self.client.create_folder(name)
            self.client.append(name, raw, flags=(SEEN,))
        except BaseException as exc:
            raise imap_error(exc) from exc

    # --- push ---------------------------------------------------------------------------------

    def supports_idle(self) -> bool:
        return bool(self.client and self.client.has_capability("IDLE"))

    def wait_for_change(self, folder: FolderSpec, seconds: float) -> bool:
        """IDLE on the folder until the server reports something or time runs out.

        Mail that arrives after a sync listed the folder but before we are back in
        IDLE is already counted in our SELECT, so IDLE would never report it: the
        UIDNEXT of the last SELECT is remembered, and a move (or the first call,
        which covers mail that came during the start-up catch-up) counts as a
        change at once, at the price of one extra, usually empty, sync per burst.
        """
        assert self.client is not None
        try:
            info = self._select(folder.name)
            uidnext = int(info.get(b"UIDNEXT", 0) or 0)
            previous, self._watched_uidnext = self._watched_uidnext, uidnext
            if previous is None or uidnext != previous:
                return True
            self.client.idle()
            try:
                responses = self.client.idle_check(timeout=seconds)
            finally:
                self.client.idle_done()
            return any(
                isinstance(item, tuple) and len(item) > 1 and item[1] in (b"EXISTS", b"RECENT")
                for item in responses
            )
        except BaseException as exc:
            raise imap_error(exc) from exc


# --- The watcher's session, lent to the syncs it triggers ------------------------------------------

# A sync of a mailbox with little new is mostly fixed cost, and a fresh connection
# (TCP, TLS, LOGIN, ENABLE) is the biggest part of it. The IDLE watcher is logged
# in already: while it is out of IDLE and waits for the sync a push triggered (run
# in its own process), that sync borrows its connection. Only then: a session kept
# between syncs in a worker would hide a password changed on the server (Dovecot
# keeps a logged-in session) until it happens to drop, where a fresh login shows
# it at the next sync.


class _LentSessions:
    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._lent: dict[str, ImapSession] = {}
        self._busy: set[str] = set()

    def lend(self, session: ImapSession) -> None:
        with self._lock:
            self._lent[session.fingerprint[0]] = session

    def take_back(self, session: ImapSession) -> None:
        key = session.fingerprint[0]
        with self._lock:
            while key in self._busy:  # a sync still uses it: wait for its end
                self._lock.wait()
            if self._lent.get(key) is session:
                del self._lent[key]

    def borrow(self, fingerprint: tuple) -> ImapSession | None:
        key = fingerprint[0]
        with self._lock:
            session = self._lent.get(key)
            if session is None or key in self._busy or session.client is None:
                return None
            if session.fingerprint != fingerprint:
                return None  # the settings changed since the watcher logged in
            self._busy.add(key)
            return session

    def give_back(self, session: ImapSession) -> None:
        with self._lock:
            self._busy.discard(session.fingerprint[0])
            self._lock.notify_all()


_lent = _LentSessions()


@contextlib.contextmanager
def lent_to_syncs(session: ImapSession) -> Iterator[None]:
    """While inside, a sync of the session's mailbox in this process runs over it."""
    _lent.lend(session)
    try:
        yield
    finally:
        _lent.take_back(session)


@contextlib.contextmanager
def sync_session(mailbox: Mailbox) -> Iterator[ImapSession]:
    """The watcher's session when it lends it (see ``lent_to_syncs``), else a new one.

    A borrowed session that fails is closed: the watcher then logs in anew."""
    session = ImapSession(mailbox)
    borrowed = _lent.borrow(session.fingerprint)
    if borrowed is None:
        with session:
            yield session
        return
    borrowed._reused = True
    try:
        yield borrowed
    except BaseException:
        borrowed._close()
        raise
    finally:
        _lent.give_back(borrowed)


# --- SMTP ---------------------------------------------------------------------------------------


def _reply_text(code: int, message) -> str:
    return f"{code} {_text(message)}".strip()


class SmtpTransport:
    """An authenticated SMTP session for one mailbox (a context manager)."""

    def __init__(
        self,
        mailbox: Mailbox,
        *,
        timeout: float | None = None,
        token_source: TokenSource | None = None,
    ) -> None:
        """``token_source`` replaces the stored OAuth tokens of an XOAUTH2 mailbox."""
        from inboxes.services import mailbox_server_inputs

        self.mailbox = mailbox
        _, smtp = mailbox_server_inputs(mailbox)
        self._server = smtp.settings()
        self._timeout = timeout
        self._token_source = token_source
        self.smtp: smtplib.SMTP | None = None

    def _login(self, smtp: smtplib.SMTP) -> None:
        username = self._server.username
        if self.mailbox.auth_method != AuthMethod.XOAUTH2:
            smtp.login(username, self._server.password)
            return
        xoauth2_login(
            self.mailbox,
            "SMTP",
            self._token_source,
            lambda token: smtp_xoauth2_attempt(smtp, username, token),
            _smtp_xoauth2_refusal,
        )

    def __enter__(self) -> SmtpTransport:
        try:
            self.smtp = open_smtp(self._server, self._timeout)
            self._login(self.smtp)
        except ProviderError:
            self._close()
            raise
        except smtplib.SMTPAuthenticationError as exc:
            self._close()
            raise ProviderError(
                f"SMTP login failed: {_reply_text(exc.smtp_code, exc.smtp_error)}",
                permanent=exc.smtp_code >= 500,
            ) from exc
        except smtplib.SMTPResponseException as exc:
            self._close()
            raise ProviderError(
                f"SMTP server refused: {_reply_text(exc.smtp_code, exc.smtp_error)}",
                permanent=exc.smtp_code >= 500,
            ) from exc
        except BaseException as exc:
            self._close()
            if isinstance(exc, netguard.HostNotAllowed):
                raise ProviderError(str(exc), permanent=True) from exc
            raise ProviderError(f"SMTP connection problem: {exc or type(exc).__name__}") from exc
        return self

    def __exit__(self, *exc_info) -> None:
        self._close()

    def _close(self) -> None:
        if self.smtp is not None:
            with contextlib.suppress(Exception):
                self.smtp.quit()
            with contextlib.suppress(Exception):
                self.smtp.close()
            self.smtp = None

    def send(
        self,
        raw: bytes,
        *,
        envelope_from: str,
        recipients: list[str],
        before_data: Callable[[], None],
    ) -> SendResult:
        smtp = self.smtp
        assert smtp is not None
        try:
            code, reply = smtp.mail(envelope_from)
            if code != 250:
                smtp.rset()
                raise ProviderError(
                    f"MAIL FROM refused: {_reply_text(code, reply)}", permanent=code >= 500
                )
            refused: dict[str, str] = {}
            for recipient in recipients:
                code, reply = smtp.rcpt(recipient)
                if code not in (250, 251):
                    refused[recipient] = _reply_text(code, reply)
            if len(refused) == len(recipients):
                smtp.rset()
                permanent = all(text.startswith("5") for text in refused.values())
                raise ProviderError(
                    "Every recipient was refused: "
                    + "; ".join(f"{r}: {t}" for r, t in refused.items()),
                    permanent=permanent,
                )
        except ProviderError:
            raise
        except smtplib.SMTPResponseException as exc:
            raise ProviderError(
                _reply_text(exc.smtp_code, exc.smtp_error), permanent=exc.smtp_code >= 500
            ) from exc
        except (smtplib.SMTPException, OSError) as exc:
            # Nothing of the message has gone out yet: safe to try again later.
            raise ProviderError(f"SMTP connection problem: {exc or type(exc).__name__}") from exc

        before_data()
        try:
            code, reply = smtp.data(raw)
        except smtplib.SMTPDataError as exc:  # the DATA command itself was refused
            raise ProviderError(
                _reply_text(exc.smtp_code, exc.smtp_error), permanent=exc.smtp_code >= 500
            ) from exc
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            raise SendOutcomeUnknown(
                f"The connection dropped after the message was sent, before the server answered: {exc}"
            ) from exc
        if code == 250:
            return SendResult(accepted=True, detail=_reply_text(code, reply), refused=refused)
        raise ProviderError(_reply_text(code, reply), permanent=code >= 500)
