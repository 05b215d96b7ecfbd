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
    if mailbox.provider == Provider.GMAIL:
        from inboxes.providers.gmail import GmailSession

        return GmailSession(mailbox)
    if mailbox.provider == Provider.MICROSOFT:
        from inboxes.providers.graph import GraphSession

        return GraphSession(mailbox)
    raise ProviderError(f"No mail provider for {mailbox.provider!r} yet.", permanent=True)


def open_transport(mailbox: Mailbox) -> MailTransport:
    """A connected, authenticated sender for ``mailbox``; use it as a context manager."""
    if mailbox.provider == Provider.IMAP:
        from inboxes.providers.imap import SmtpTransport

        return SmtpTransport(mailbox)
    if mailbox.provider == Provider.GMAIL:
        from inboxes.providers.gmail import GmailTransport

        return GmailTransport(mailbox)
    if mailbox.provider == Provider.MICROSOFT:
        from inboxes.providers.graph import GraphTransport

        return GraphTransport(mailbox)
    raise ProviderError(f"No mail provider for {mailbox.provider!r} yet.", permanent=True)


__all__ = ["MailSession", "MailTransport", "ProviderError", "open_session", "open_transport"]
