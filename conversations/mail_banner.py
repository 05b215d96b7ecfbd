"""Broken mail is visible where people work: the banner over the inbox and in the reply
composer when an inbox's team email can't send (its wording: inboxes/error_wording.py)."""

from __future__ import annotations

from typing import Any

from django.urls import reverse

from accounts.models import User
from inboxes.error_wording import is_broken, mailbox_state
from inboxes.models import Inbox, Mailbox, MailboxStatus, Provider
from inboxes.selectors import inboxes_visible_to


def reconnect_url(mailbox: Mailbox) -> str:
    """Where an admin fixes the mailbox: the sign-in again for Google and Microsoft,
    the server settings on its page for IMAP."""
    if mailbox.provider != Provider.IMAP and mailbox.status == MailboxStatus.NEEDS_REAUTH:
        return reverse("connect-start", args=[mailbox.provider]) + f"?reconnect={mailbox.pk}"
    return reverse("settings-mailbox", args=[mailbox.pk]) + "#server-settings"


def mail_banner(mailbox: Mailbox | None, *, viewer: User) -> dict[str, Any] | None:
    """``{text, reconnect_url}`` when replies from ``mailbox`` can't be sent; the
    Reconnect link only for admins, who manage team emails."""
    if mailbox is None or not is_broken(mailbox):
        return None
    problem = mailbox_state(mailbox).problem
    reason = problem.reason if problem else "the connection stopped working"
    text = f"Replies from {mailbox.address} can't be sent: {reason}."
    if viewer.is_admin:
        return {
            "text": f"{text} {problem.fix if problem else ''}".strip(),
            "url": reconnect_url(mailbox),
        }
    return {"text": f"{text} Ask an admin to reconnect.", "url": ""}


def inbox_banners(viewer: User, inbox: Inbox | None) -> list[dict[str, Any]]:
    """The banners over the inbox screen: the shown inbox's, or every visible one's."""
    inboxes = (
        [inbox]
        if inbox is not None
        else list(
            inboxes_visible_to(viewer).filter(
                mailbox__status__in=[MailboxStatus.ERROR, MailboxStatus.NEEDS_REAUTH]
            )
        )
    )
    banners = []
    for each in inboxes:
        banner = mail_banner(each.mailbox, viewer=viewer)
        if banner is not None:
            banners.append(banner)
    return banners
