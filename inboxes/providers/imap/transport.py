"""Sending from an IMAP/SMTP mailbox: ``SmtpTransport``, an authenticated SMTP session."""

from __future__ import annotations

import contextlib
import smtplib
from collections.abc import Callable

from inboxes import netguard
from inboxes.models import AuthMethod, Mailbox
from inboxes.providers.base import ProviderError, SendOutcomeUnknown, SendResult
from inboxes.providers.imap.auth import (
    TokenSource,
    mailbox_servers,
    smtp_xoauth2_attempt,
    smtp_xoauth2_refusal,
    xoauth2_login,
)
from inboxes.providers.imap.connection import open_smtp, reply_text


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
        self.mailbox = mailbox
        _, self._server = mailbox_servers(mailbox)
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
            smtp_xoauth2_refusal,
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
                f"SMTP login failed: {reply_text(exc.smtp_code, exc.smtp_error)}",
                permanent=exc.smtp_code >= 500,
            ) from exc
        except smtplib.SMTPResponseException as exc:
            self._close()
            raise ProviderError(
                f"SMTP server refused: {reply_text(exc.smtp_code, exc.smtp_error)}",
                permanent=exc.smtp_code >= 500,
            ) from exc
        except BaseException as exc:
            self._close()
            if isinstance(exc, netguard.HostNotAllowed):
                raise ProviderError(str(exc), permanent=True) from exc
            raise ProviderError(f"SMTP connection problem: {exc or type(exc).__name__}") from exc
        return self

    def __exit__(self, *exc_info: object) -> None:
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
                    f"MAIL FROM refused: {reply_text(code, reply)}", permanent=code >= 500
                )
            refused: dict[str, str] = {}
            for recipient in recipients:
                code, reply = smtp.rcpt(recipient)
                if code not in (250, 251):
                    refused[recipient] = reply_text(code, reply)
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
                reply_text(exc.smtp_code, exc.smtp_error), permanent=exc.smtp_code >= 500
            ) from exc
        except (smtplib.SMTPException, OSError) as exc:
            # Nothing of the message has gone out yet: safe to try again later.
            raise ProviderError(f"SMTP connection problem: {exc or type(exc).__name__}") from exc

        before_data()
        try:
            code, reply = smtp.data(raw)
        except smtplib.SMTPDataError as exc:  # the DATA command itself was refused
            raise ProviderError(
                reply_text(exc.smtp_code, exc.smtp_error), permanent=exc.smtp_code >= 500
            ) from exc
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            raise SendOutcomeUnknown(
                f"The connection dropped after the message was sent, before the server answered: {exc}"
            ) from exc
        if code == 250:
            return SendResult(accepted=True, detail=reply_text(code, reply), refused=refused)
        raise ProviderError(reply_text(code, reply), permanent=code >= 500)
