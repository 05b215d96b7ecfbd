"""``{% mailbox_state mailbox as state %}``: a mailbox's one badge and message
(inboxes/error_wording.py); ``{% mailbox_push mailbox as push %}``: how its new mail is
noticed (inboxes/push/state.py); and ``{{ error|plain_error }}`` for a stored error."""

from __future__ import annotations

from typing import Any

from django import template

from inboxes.error_wording import MailboxState, mailbox_state, plain_error, test_failure
from inboxes.models import Mailbox
from inboxes.push.state import PushView, mailbox_push_view

register = template.Library()


@register.simple_tag(name="mailbox_state")
def mailbox_state_tag(mailbox: Mailbox) -> MailboxState:
    return mailbox_state(mailbox)


@register.filter(name="plain_error")
def plain_error_filter(error: str) -> str:
    return plain_error(error).sentence if error else ""


@register.filter(name="plain_test_failure")
def plain_test_failure_filter(steps: list[dict[str, Any]] | None) -> str:
    """A failed connection test's steps (``as_dict()["steps"]``) as one plain sentence."""
    failure = test_failure({"steps": steps or []})
    return failure.sentence if failure else ""


@register.simple_tag(name="mailbox_push")
def mailbox_push_tag(mailbox: Mailbox) -> PushView:
    return mailbox_push_view(mailbox)
