"""Mail providers behind one small interface (base.py) and a registry.

The sync and sending services only talk to ``open_session``, ``open_transport``
and the ``MailSession``/``MailTransport`` protocols; IMAP/SMTP is the imap
package, Gmail (gmail/) and Microsoft Graph (graph/) plug in beside it, each as
session.py (reading) and transport.py (sending) over its own client layer.
Sign-in clients are found through signin.py. Providers get passwords and tokens
from ``inboxes.credentials`` and never call the services above them.
"""

from __future__ import annotations

from inboxes.models import Mailbox, Provider
from inboxes.providers.base import MailSession, MailTransport, ProviderError


def open_session(mailbox: Mailbox) -> MailSession:
    """A connected, logged-in session for ``mailbox``; use it as a context manager."""
    if mailbox.provider == Provider.IMAP:
        from inboxes.providers.imap.session import ImapSession

        return ImapSession(mailbox)
    if mailbox.provider == Provider.GMAIL:
        from inboxes.providers.gmail.session import GmailSession

        return GmailSession(mailbox)
    if mailbox.provider == Provider.MICROSOFT:
        from inboxes.providers.graph.session import GraphSession

        return GraphSession(mailbox)
    raise ProviderError(f"No mail provider for {mailbox.provider!r} yet.", permanent=True)


def open_transport(mailbox: Mailbox) -> MailTransport:
    """A connected, authenticated sender for ``mailbox``; use it as a context manager."""
    if mailbox.provider == Provider.IMAP:
        from inboxes.providers.imap.transport import SmtpTransport

        return SmtpTransport(mailbox)
    if mailbox.provider == Provider.GMAIL:
        from inboxes.providers.gmail.transport import GmailTransport

        return GmailTransport(mailbox)
    if mailbox.provider == Provider.MICROSOFT:
        from inboxes.providers.graph.transport import GraphTransport

        return GraphTransport(mailbox)
    raise ProviderError(f"No mail provider for {mailbox.provider!r} yet.", permanent=True)


__all__ = ["MailSession", "MailTransport", "ProviderError", "open_session", "open_transport"]
