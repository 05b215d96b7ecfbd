"""Mail providers behind one small interface (base.py) and a registry.

The sync and sending services only talk to ``open_session`` and the
``MailSession`` protocol; IMAP/SMTP is imap.py, Gmail and Microsoft Graph
plug in beside it.
"""

from __future__ import annotations

from inboxes.models import Mailbox, Provider
from inboxes.providers.base import MailSession, MailTransport, ProviderError


def open_session(mailbox: Mailbox) -> MailSession:
    """A connected, logged-in session for ``mailbox``; use it as a context manager."""
    if mailbox.provider == Provider.IMAP:
        from inboxes.providers.imap import ImapSession

        return ImapSession(mailbox)
    raise ProviderError(f"No mail provider for {mailbox.provider!r} yet.", permanent=True)


def open_transport(mailbox: Mailbox) -> MailTransport:
    """A connected, authenticated sender for ``mailbox``; use it as a context manager."""
    if mailbox.provider == Provider.IMAP:
        from inboxes.providers.imap import SmtpTransport

        return SmtpTransport(mailbox)
    raise ProviderError(f"No mail provider for {mailbox.provider!r} yet.", permanent=True)


__all__ = ["MailSession", "MailTransport", "ProviderError", "open_session", "open_transport"]
