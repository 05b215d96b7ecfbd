"""The product's own mail (notifications, invitations to users): the one way it is
sent, through Django's mail backend (``EMAIL_URL``; off by default: written to the
log), never through a customer's mailbox.

Every such email is marked ``Auto-Submitted: auto-generated`` (RFC 3834) so that
out-of-office responders do not answer it, and asks Exchange not to either
(``X-Auto-Response-Suppress``). Callers in the products check each recipient with
inboxes/automail.py ``may_send_automatically`` first.
"""

from __future__ import annotations

from django.conf import settings
from django.core.mail import EmailMultiAlternatives

AUTOMATIC_HEADERS = {
    "Auto-Submitted": "auto-generated",
    "X-Auto-Response-Suppress": "All",
}


def product_mail_send(*, to: list[str], subject: str, text: str, html: str = "") -> int:
    """Send one email from the product (``DEFAULT_FROM_EMAIL``); returns how many went."""
    if not to:
        return 0
    message = EmailMultiAlternatives(
        subject=subject,
        body=text,
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=to,
        headers=dict(AUTOMATIC_HEADERS),
    )
    if html:
        message.attach_alternative(html, "text/html")
    return message.send()
