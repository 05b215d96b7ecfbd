"""How an IMAP/SMTP mailbox signs in: its stored servers and passwords, or XOAUTH2.

A password mailbox logs in with the passwords kept in its encrypted secrets. An
XOAUTH2 mailbox (``auth_method``) logs in with an access token of the sign-in
provider named in ``oauth_provider``; ``inboxes.credentials`` refreshes it under
the per-mailbox lease. A refused token is expired and replaced once; a second
refusal marks the mailbox needs_reauth.
"""

from __future__ import annotations

import imaplib
import smtplib
from collections.abc import Callable

import imapclient
from django.db import transaction
from imapclient.exceptions import LoginError

from core.errors import Invalid
from inboxes import credentials
from inboxes.credentials import OAuthTokens
from inboxes.models import Mailbox
from inboxes.providers import signin
from inboxes.providers.base import ProviderError
from inboxes.providers.imap.connection import ServerSettings, reply_text, server_text


def mailbox_servers(mailbox: Mailbox) -> tuple[ServerSettings, ServerSettings]:
    """The IMAP and SMTP settings of ``mailbox``, with the passwords it stores."""
    secrets = credentials.mailbox_secrets(mailbox)
    return (
        ServerSettings(
            host=mailbox.imap_host,
            port=mailbox.imap_port or 0,
            security=mailbox.imap_security,
            username=mailbox.imap_username,
            password=secrets.get("imap_password", ""),
        ),
        ServerSettings(
            host=mailbox.smtp_host,
            port=mailbox.smtp_port or 0,
            security=mailbox.smtp_security,
            username=mailbox.smtp_username,
            password=secrets.get("smtp_password", ""),
        ),
    )


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
            raise ProviderError(f"IMAP connection problem: {server_text(exc)}") from exc
        if any(code in server_text(exc).upper() for code in _IMAP_TRANSIENT_CODES):
            raise ProviderError(
                f"The IMAP server could not check the sign-in token now: {server_text(exc)}"
            ) from exc
        raise


def imap_xoauth2_refusal(exc: BaseException) -> str | None:
    """The server's words when it refused the token; None for any other failure."""
    return server_text(exc) if isinstance(exc, LoginError) else None


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
                + reply_text(exc.smtp_code, exc.smtp_error)
            ) from exc
        raise


def smtp_xoauth2_refusal(exc: BaseException) -> str | None:
    # 535 bad credentials, 534 "log in with your web browser"; 504 (no such
    # mechanism) and the rest are not a verdict on the token.
    if isinstance(exc, smtplib.SMTPAuthenticationError) and exc.smtp_code in (534, 535):
        return reply_text(exc.smtp_code, exc.smtp_error)
    return None


class _LazyOAuthClient:
    """The sign-in provider's OAuth client, made only when a refresh is needed:
    a login with a fresh stored token does not depend on the provider module."""

    def __init__(self, provider: str) -> None:
        self._provider = provider

    def refresh(self, tokens: OAuthTokens) -> OAuthTokens:
        try:
            client = signin.oauth_client(self._provider)
        except Invalid as exc:
            raise ProviderError(
                f"This mailbox signs in with an unknown provider ({self._provider!r}).",
                permanent=True,
            ) from exc
        return client.refresh(tokens)


def stored_token_source(mailbox: Mailbox) -> TokenSource:
    """Access tokens from the mailbox's stored OAuth tokens, refreshed when about to
    expire (one refresh per mailbox at a time, rotated tokens committed at once)."""
    client = _LazyOAuthClient(mailbox.oauth_provider)
    return lambda: credentials.access_token_for(mailbox, client=client)


def expire_stored_token(mailbox: Mailbox, access_token: str) -> None:
    """Mark the stored access token expired (the server refused it), so the next
    ``access_token_for`` refreshes. A token another worker has replaced meanwhile
    is left alone: only the refused one is expired."""
    with transaction.atomic():
        row = (
            Mailbox.objects.select_for_update()
            .only("id", "account_id", "secrets_ciphertext")
            .get(pk=mailbox.pk)
        )
        tokens = credentials.tokens_load(row)
        if tokens.access_token != access_token or not tokens.expires_at:
            return
        tokens.expires_at = 0
        credentials.tokens_store(row, tokens)


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
    source = stored_token_source(mailbox) if token_source is None else token_source
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
        credentials.mark_needs_reauth(mailbox, reason)
    raise ProviderError(reason, reauth=True)
