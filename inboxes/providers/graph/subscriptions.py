"""Microsoft Graph change-notification subscriptions on a mailbox's mail folders.

``POST /subscriptions`` asks Graph to tell ``notificationUrl`` when messages are
created or updated in one folder. Graph checks the URL first (it POSTs
``?validationToken=...`` and wants the token back as text/plain within 10 s) and only
then answers; every notification carries the ``clientState`` we chose, our proof that
it comes from Graph. A mail subscription lives at most 10,080 minutes (just under 7
days): ``PATCH`` moves its expiry on, ``DELETE`` ends it. A subscription Graph no
longer knows (expired, removed) answers 404: ``SubscriptionGone``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import quote

from django.utils import timezone

from inboxes.models import Mailbox, MailboxKind
from inboxes.providers.base import ProviderError
from inboxes.providers.graph.client import GraphMailbox
from inboxes.providers.graph.http import failure, graph_root, iso, json_of, parse_time

# Graph's maximum for Outlook messages is 10,080 minutes; ask a little less, so clock
# skew between us and Microsoft never makes the request too long (Graph refuses it).
SUBSCRIPTION_MINUTES = 10_000
CHANGE_TYPES = "created,updated"


class SubscriptionGone(ProviderError):
    """Graph no longer knows the subscription (404): it expired or was removed."""


@dataclass(frozen=True)
class Subscription:
    id: str
    resource: str
    expires_at: datetime


def subscription_expiry(now: datetime | None = None) -> datetime:
    return (now or timezone.now()) + timedelta(minutes=SUBSCRIPTION_MINUTES)


def folder_resource(mailbox: Mailbox, folder: str) -> str:
    """The resource a subscription watches: a folder's messages (``folder`` is a
    folder id or a well-known name such as ``inbox`` or ``sentitems``)."""
    if mailbox.kind == MailboxKind.TEAM:
        owner = "users/" + quote(mailbox.address, safe="@")
    else:
        owner = "me"
    return f"{owner}/mailFolders('{quote(folder, safe='')}')/messages"


class GraphSubscriptions(GraphMailbox):
    """Create, renew and delete one mailbox's subscriptions (a context manager)."""

    def __enter__(self) -> GraphSubscriptions:
        self._open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._close()

    @staticmethod
    def _url(subscription_id: str = "") -> str:
        url = f"{graph_root()}/subscriptions"
        return f"{url}/{quote(subscription_id, safe='')}" if subscription_id else url

    def create(
        self,
        *,
        folder: str,
        notification_url: str,
        client_state: str,
        expires_at: datetime | None = None,
    ) -> Subscription:
        """Subscribe to new and changed messages in ``folder``. Graph validates
        ``notification_url`` (the lifecycle URL too) before it answers."""
        body = {
            "changeType": CHANGE_TYPES,
            "resource": folder_resource(self.mailbox, folder),
            "notificationUrl": notification_url,
            "lifecycleNotificationUrl": notification_url,
            "clientState": client_state,
            "expirationDateTime": iso(expires_at or subscription_expiry()),
        }
        response = self._request("POST", self._url(), "subscribe to new mail", json=body)
        if response.status_code != 201:
            # 400 ValidationError: our endpoint failed Graph's handshake; retrying
            # is what the next round does, so it stays transient.
            raise failure(response, "subscribe to new mail", permanent_statuses=frozenset())
        return self._subscription(json_of(response), "subscribe to new mail")

    def renew(self, subscription_id: str, expires_at: datetime | None = None) -> Subscription:
        body = {"expirationDateTime": iso(expires_at or subscription_expiry())}
        response = self._request(
            "PATCH", self._url(subscription_id), "renew a subscription", json=body
        )
        if response.status_code == 404:
            raise SubscriptionGone(
                f"Microsoft Graph no longer knows subscription {subscription_id}."
            )
        if response.status_code != 200:
            raise failure(response, "renew a subscription", permanent_statuses=frozenset())
        return self._subscription(json_of(response), "renew a subscription")

    def delete(self, subscription_id: str) -> None:
        """End a subscription; one Graph no longer knows is already ended."""
        response = self._request("DELETE", self._url(subscription_id), "end a subscription")
        if response.status_code not in (204, 404):
            raise failure(response, "end a subscription", permanent_statuses=frozenset())

    @staticmethod
    def _subscription(body: dict, doing: str) -> Subscription:
        expires_at = parse_time(body.get("expirationDateTime"))
        if not body.get("id") or expires_at is None:
            raise ProviderError(f"Microsoft Graph's answer did not say how it will {doing}.")
        return Subscription(str(body["id"]), str(body.get("resource") or ""), expires_at)
