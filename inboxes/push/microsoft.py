"""Microsoft Graph push: a change-notification subscription per folder.

Keeping (``graph_subscriptions_keep``, from inboxes/push/renewal.py): each folder the
sync reads (inbox, and Sent Items for a personal email) has one ``PushChannel``
holding its subscription's id, the SHA-256 of its ``clientState`` secret (the secret
itself is only ever sent to Graph) and its expiry. A folder without a working
subscription gets a new one, one that expires within ``RENEW_WITHIN`` is renewed (and
made again if Graph no longer knows it); once every folder holds, the mailbox is
polled only as a safety net (``push_holds``). When any of it fails the channel says
why and the ProviderError goes up, so the mailbox is polled again (``push_lapsed``).

Receiving (``graph_notifications_receive``, from the ``/hooks/microsoft/`` view): a
notification counts only when its ``subscriptionId`` is one of ours and its
``clientState`` hashes to that channel's hash; anything else is ignored and logged.
A change notification asks for a sync; lifecycle notifications renew
(``reauthorizationRequired``), subscribe again (``subscriptionRemoved``) or sync
(``missed``). The work is queued, never done in the request, and a notification
carries nothing we trust: the sync decides what is new, so a duplicate, late or
forged one changes nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from inboxes.models import (
    FolderRole,
    Mailbox,
    MailboxKind,
    MailboxStatus,
    Provider,
    PushChannel,
    PushStatus,
)
from inboxes.providers.base import ProviderError
from inboxes.providers.graph.subscriptions import GraphSubscriptions, SubscriptionGone
from inboxes.push.state import push_configured, push_holds, push_received

log = logging.getLogger(__name__)

HOOK_PATH = "/hooks/microsoft/"
# Renewed when less than this is left: beat looks every PUSH_RENEW_SECONDS (an hour),
# so a renewal that fails has many more tries before the subscription lapses.
RENEW_WITHIN = timedelta(days=1)
# The folders the sync reads (inboxes/providers/graph/session.py ``folders``), by
# Graph's well-known names.
GRAPH_FOLDERS = {FolderRole.INBOX: "inbox", FolderRole.SENT: "sentitems"}


def hook_url() -> str:
    return settings.PUBLIC_URL.rstrip("/") + HOOK_PATH


def client_state_hash(client_state: str) -> str:
    return hashlib.sha256(client_state.encode("utf-8")).hexdigest()


def push_folder_roles(mailbox: Mailbox) -> list[str]:
    """As the sync: a personal email's inbox and Sent Items, a team email's inbox."""
    if mailbox.kind == MailboxKind.PERSONAL:
        return [FolderRole.INBOX, FolderRole.SENT]
    return [FolderRole.INBOX]


# --- keeping the subscriptions ---------------------------------------------------------------------


def graph_subscriptions_keep(mailbox: Mailbox, now: datetime | None = None) -> None:
    """Subscribe the mailbox's inbox and sent folders when not subscribed, renew the
    subscriptions before they expire; without GRAPH_PUSH, nothing (polled).

    Raises the first ProviderError after every folder was tried (each failed
    channel keeps its own ``last_error``). No database transaction is held while
    Graph is asked: creating a subscription waits for Graph's handshake with our
    endpoint, which may take seconds.
    """
    if not push_configured(Provider.MICROSOFT):
        return
    now = now or timezone.now()
    roles = push_folder_roles(mailbox)
    channels = {
        c.folder_role: c
        for c in PushChannel.objects.filter(mailbox=mailbox, provider=Provider.MICROSOFT)
    }
    stale = [c for role, c in channels.items() if role not in roles]
    due = [role for role in roles if _needs_work(channels.get(role), now)]
    if not due and not stale:
        _hold(mailbox, roles)
        return
    errors: list[ProviderError] = []
    try:
        with GraphSubscriptions(mailbox) as graph:
            for role in due:
                try:
                    _keep_folder(graph, mailbox, role, channels.get(role))
                except ProviderError as exc:
                    errors.append(exc)
                    _fail(mailbox, role, f"{role} folder: {exc}")
            for channel in stale:  # e.g. a personal email transferred into a team inbox
                _forget(graph, channel)
    except ProviderError as exc:  # no session (the sign-in is dead, Graph unreachable)
        for role in due:
            _fail(mailbox, role, str(exc))
        raise
    if errors:
        raise errors[0]
    _hold(mailbox, roles)


def _needs_work(channel: PushChannel | None, now: datetime) -> bool:
    if channel is None or channel.status != PushStatus.ACTIVE or not channel.external_id:
        return True
    return channel.expires_at is None or channel.expires_at - now < RENEW_WITHIN


def _keep_folder(
    graph: GraphSubscriptions, mailbox: Mailbox, role: str, channel: PushChannel | None
) -> None:
    if channel is not None and channel.status == PushStatus.ACTIVE and channel.external_id:
        try:
            renewed = graph.renew(channel.external_id)
        except SubscriptionGone:
            log.info("mailbox %s: %s subscription gone; subscribing again", mailbox.pk, role)
        else:
            # Only if nobody replaced the subscription in the meantime.
            PushChannel.objects.filter(pk=channel.pk, external_id=channel.external_id).update(
                expires_at=renewed.expires_at, renewed_at=timezone.now(), last_error=""
            )
            return
    _subscribe(graph, mailbox, role, channel)


def _subscribe(
    graph: GraphSubscriptions, mailbox: Mailbox, role: str, channel: PushChannel | None
) -> None:
    """A new subscription with a fresh secret; only the secret's hash is stored."""
    client_state = secrets.token_urlsafe(32)  # Graph allows up to 128 characters
    made = graph.create(
        folder=GRAPH_FOLDERS[FolderRole(role)],
        notification_url=hook_url(),
        client_state=client_state,
    )
    fields = {
        "external_id": made.id,
        "client_state_hash": client_state_hash(client_state),
        "status": PushStatus.ACTIVE,
        "expires_at": made.expires_at,
        "renewed_at": timezone.now(),
        "last_error": "",
    }
    if _store(mailbox, role, channel, fields):
        if channel is not None and channel.external_id and channel.external_id != made.id:
            _delete_quietly(graph, channel.external_id)  # the old one, if Graph still has it
    else:
        _delete_quietly(graph, made.id)  # another keeper got there first: keep one


def _store(mailbox: Mailbox, role: str, channel: PushChannel | None, fields: dict) -> bool:
    """Save the new subscription unless another keeper changed the channel since we
    read it (a conditional UPDATE, or the unique folder constraint): False then."""
    if channel is None:
        try:
            with transaction.atomic():
                PushChannel.objects.create(
                    mailbox=mailbox, provider=Provider.MICROSOFT, folder_role=role, **fields
                )
        except IntegrityError:
            return False
        return True
    return bool(
        PushChannel.objects.filter(
            pk=channel.pk, external_id=channel.external_id, status=channel.status
        ).update(**fields)
    )


def _fail(mailbox: Mailbox, role: str, why: str) -> None:
    """The folder is not pushed: its channel says why, and the next round subscribes anew."""
    updated = PushChannel.objects.filter(
        mailbox=mailbox, provider=Provider.MICROSOFT, folder_role=role
    ).update(status=PushStatus.FAILED, last_error=why[:2000], updated_at=timezone.now())
    if not updated:
        try:
            with transaction.atomic():
                PushChannel.objects.create(
                    mailbox=mailbox,
                    provider=Provider.MICROSOFT,
                    folder_role=role,
                    status=PushStatus.FAILED,
                    last_error=why[:2000],
                )
        except IntegrityError:
            pass  # another keeper made it a moment ago; its outcome stands


def _forget(graph: GraphSubscriptions, channel: PushChannel) -> None:
    if channel.external_id:
        _delete_quietly(graph, channel.external_id)
    channel.delete()


def _delete_quietly(graph: GraphSubscriptions, subscription_id: str) -> None:
    """Best effort: a subscription left behind expires within days, and what it
    sends no longer matches a channel, so it is ignored."""
    try:
        graph.delete(subscription_id)
    except ProviderError as exc:
        log.info("could not end Graph subscription %s: %s", subscription_id, exc)


def _hold(mailbox: Mailbox, roles: list[str]) -> None:
    """Every folder pushed: poll only as the safety net until the first expiry."""
    expiries = [
        c.expires_at
        for c in PushChannel.objects.filter(
            mailbox=mailbox, provider=Provider.MICROSOFT, folder_role__in=roles
        )
        if c.status == PushStatus.ACTIVE and c.external_id and c.expires_at
    ]
    if len(expiries) == len(roles):
        push_holds(mailbox.pk, min(expiries))


def graph_subscriptions_end(mailbox: Mailbox) -> int:
    """End the mailbox's subscriptions at Graph (best effort) and forget them; the
    number ended. Needs the mailbox's tokens, so call it before they are dropped."""
    channels = list(PushChannel.objects.filter(mailbox=mailbox, provider=Provider.MICROSOFT))
    if not channels:
        return 0
    ended = 0
    try:
        with GraphSubscriptions(mailbox) as graph:
            for channel in channels:
                if channel.external_id:
                    _delete_quietly(graph, channel.external_id)
                    ended += 1
    except ProviderError as exc:
        log.info("mailbox %s: subscriptions left to expire: %s", mailbox.pk, exc)
    PushChannel.objects.filter(pk__in=[c.pk for c in channels]).delete()
    return ended


# --- receiving notifications -----------------------------------------------------------------------


class MalformedNotifications(ValueError):
    """The body is not Graph's ``{"value": [...]}``."""


@dataclass
class Received:
    """What one POST to the hook did (for the log and the tests)."""

    changes: int = 0
    lifecycle: dict[str, int] = field(default_factory=dict)
    ignored: int = 0
    mailboxes: set[UUID] = field(default_factory=set)


LIFECYCLE_EVENTS = ("reauthorizationRequired", "subscriptionRemoved", "missed")


def graph_notifications_receive(payload: Any, now: datetime | None = None) -> Received:
    """Act on a batch of notifications: queue the syncs and renewals they ask for.

    Only a notification naming one of our subscriptions, with that subscription's
    clientState, counts; the comparison is of SHA-256 hashes in constant time.
    """
    if not isinstance(payload, dict) or not isinstance(payload.get("value"), list):
        raise MalformedNotifications('Expected a JSON object with a "value" list.')
    now = now or timezone.now()
    items = [item for item in payload["value"] if isinstance(item, dict)]
    received = Received(ignored=len(payload["value"]) - len(items))
    ids = {str(item.get("subscriptionId") or "") for item in items} - {""}
    channels = {
        c.external_id: c
        for c in PushChannel.objects.filter(
            provider=Provider.MICROSOFT, external_id__in=ids
        ).exclude(mailbox__status=MailboxStatus.DISCONNECTED)  # left to expire at Microsoft
    }
    to_sync: set[UUID] = set()
    to_keep: set[UUID] = set()
    for item in items:
        channel = channels.get(str(item.get("subscriptionId") or ""))
        if channel is None or not _genuine(channel, item.get("clientState")):
            received.ignored += 1
            continue
        event = item.get("lifecycleEvent")
        if event is None:
            received.changes += 1
            to_sync.add(channel.mailbox_id)
            PushChannel.objects.filter(pk=channel.pk).update(last_push_at=now)
            continue
        event = str(event)
        received.lifecycle[event] = received.lifecycle.get(event, 0) + 1
        if event == "reauthorizationRequired":
            # Graph wants the subscription renewed (with a valid token) soon: make
            # it due now, so the keeper renews it rather than waiting for the day.
            PushChannel.objects.filter(pk=channel.pk, external_id=channel.external_id).update(
                expires_at=now
            )
            to_keep.add(channel.mailbox_id)
        elif event == "subscriptionRemoved":
            PushChannel.objects.filter(pk=channel.pk, external_id=channel.external_id).update(
                status=PushStatus.STOPPED, last_error="Microsoft Graph removed the subscription."
            )
            to_keep.add(channel.mailbox_id)
            to_sync.add(channel.mailbox_id)  # mail may have come while it was gone
        elif event == "missed":
            to_sync.add(channel.mailbox_id)  # the delta sync catches up
        else:
            log.info("Graph lifecycle event %r ignored", event)
    for mailbox_id in to_sync:
        push_received(mailbox_id)
    for mailbox_id in to_keep:
        _queue_keep(mailbox_id)
    received.mailboxes = to_sync | to_keep
    if received.ignored:
        log.warning(
            "Graph hook: %d notification(s) ignored (unknown subscription or wrong clientState)",
            received.ignored,
        )
    return received


def _genuine(channel: PushChannel, client_state: Any) -> bool:
    if not channel.client_state_hash or not isinstance(client_state, str):
        return False
    return hmac.compare_digest(client_state_hash(client_state), channel.client_state_hash)


def _queue_keep(mailbox_id: UUID | str) -> None:
    from inboxes.tasks import keep_push_channel

    transaction.on_commit(lambda: keep_push_channel.delay(str(mailbox_id)))
