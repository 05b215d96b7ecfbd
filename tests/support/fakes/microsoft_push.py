"""Microsoft Graph change notifications for the fake (tests/support/fakes/microsoft.py).

Routes, in Graph's documented shapes:

- ``POST /subscriptions`` (201): ``changeType``, ``resource`` (``me/mailFolders('inbox')/messages``
  or ``users/{address}/mailFolders('sentitems')/messages``), ``notificationUrl``,
  ``lifecycleNotificationUrl``, ``clientState`` (at most 128 characters) and
  ``expirationDateTime`` (in the future, at most 10,080 minutes away). Before it
  answers, the fake does Graph's validation handshake with every URL: a POST of
  ``?validationToken=...`` that must answer 200, ``text/plain``, the token exactly,
  within ``validation_timeout`` seconds; otherwise 400 ``ValidationError`` and no
  subscription;
- ``GET /subscriptions``, ``GET``/``PATCH``/``DELETE /subscriptions/{id}`` (404 once
  it expired or was removed).

Mail put into a subscribed folder (``deliver``, a send's Sent Items copy, ``touch``
for "updated") makes the fake POST a change notification carrying the subscription's
clientState to its notificationUrl, from a background thread as Graph does. Test
controls: ``lifecycle`` sends ``reauthorizationRequired`` / ``subscriptionRemoved`` /
``missed``; ``remove`` drops a subscription (and says so, as Graph does); ``expire``
lets one lapse silently; ``pushes`` records every POST and its answer.
"""

from __future__ import annotations

import json
import queue
import re
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, unquote

import requests

MAX_MINUTES = 10_080  # Graph's longest subscription on Outlook messages
VALIDATION_TIMEOUT = 10.0  # Graph waits this long for the handshake
NOTIFICATION_TIMEOUT = 10.0
_RESOURCE = re.compile(
    r"/?(?P<owner>me|users/(?P<user>[^/]+))/mailFolders(?:\('(?P<q>[^']+)'\)|/(?P<p>[^/]+))/messages",
    re.IGNORECASE,
)
CHANGE_TYPES = {"created", "updated", "deleted"}


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")


@dataclass
class FakeSubscription:
    id: str
    address: str  # whose folder
    creator: str  # who made it (the bearer's account)
    folder: str
    resource: str
    change_types: set[str]
    notification_url: str
    lifecycle_url: str
    client_state: str
    expires: datetime

    def render(self) -> dict:
        return {
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#subscriptions/$entity",
            "id": self.id,
            "resource": self.resource,
            "applicationId": "00000000-postkamer-test-client",
            "changeType": ",".join(sorted(self.change_types)),
            "clientState": self.client_state,
            "notificationUrl": self.notification_url,
            "lifecycleNotificationUrl": self.lifecycle_url or None,
            "expirationDateTime": _iso(self.expires),
            "creatorId": self.creator,
        }


@dataclass
class Push:
    """One POST the fake made to a notification URL, and what it got back."""

    subscription_id: str
    kind: str  # "created", "updated", or a lifecycle event
    url: str
    payload: dict
    status: int = 0  # 0: no answer (refused, timed out)
    content_type: str = ""
    seconds: float = 0.0
    sent_at: float = 0.0
    done: threading.Event = field(default_factory=threading.Event)


class GraphPush:
    """The subscriptions of one fake and the thread that delivers its notifications."""

    def __init__(self, fake: Any) -> None:
        self.fake = fake
        self.subscriptions: dict[str, FakeSubscription] = {}
        self.pushes: list[Push] = []
        self.validations: list[tuple[str, int]] = []  # (url, status) of each handshake
        self.validation_timeout = VALIDATION_TIMEOUT
        self.paused = False  # while True notifications wait (as when Graph is slow)
        self.silent = False  # while True changes notify nobody (Graph lost them: "missed")
        self._queue: queue.Queue[Push | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._http = requests.Session()
        self._http.trust_env = False

    # --- delivery ------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fake-graph-push", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=NOTIFICATION_TIMEOUT + 2)
        self._http.close()

    def _run(self) -> None:
        while True:
            push = self._queue.get()
            if push is None:
                return
            while self.paused:
                time.sleep(0.02)
            self._post(push)

    def _post(self, push: Push) -> None:
        push.sent_at = time.monotonic()
        try:
            answer = self._http.post(
                push.url,
                data=json.dumps(push.payload).encode(),
                headers={"Content-Type": "application/json; charset=utf-8"},
                timeout=NOTIFICATION_TIMEOUT,
            )
            push.status = answer.status_code
            push.content_type = answer.headers.get("Content-Type", "")
        except requests.RequestException:
            push.status = 0
        push.seconds = time.monotonic() - push.sent_at
        push.done.set()

    def _enqueue(self, subscription: FakeSubscription, kind: str, item: dict, url: str) -> Push:
        push = Push(subscription.id, kind, url, {"value": [item]})
        with self.fake.lock:
            self.pushes.append(push)
        self._queue.put(push)
        return push

    def wait(self, timeout: float = 15.0) -> list[Push]:
        """Until every notification so far was answered; all of them."""
        deadline = time.monotonic() + timeout
        with self.fake.lock:
            pending = list(self.pushes)
        for push in pending:
            if not push.done.wait(max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"notification {push.kind} to {push.url} still unanswered")
        return pending

    # --- what makes notifications ----------------------------------------------------------------

    def _live(self, subscription: FakeSubscription) -> bool:
        return subscription.expires > datetime.now(UTC)

    def changed(self, user: Any, message: Any, change_type: str) -> None:
        """A message was created or changed in a folder: notify its subscriptions.
        Called with the fake's lock held."""
        if self.silent:
            return
        for subscription in list(self.subscriptions.values()):
            if (
                subscription.address.lower() == user.address.lower()
                and subscription.folder == message.folder
                and change_type in subscription.change_types
                and self._live(subscription)
            ):
                resource = f"Users/{user.id}/Messages/{message.id}"
                item = {
                    "subscriptionId": subscription.id,
                    "subscriptionExpirationDateTime": _iso(subscription.expires),
                    "changeType": change_type,
                    "resource": resource,
                    "resourceData": {
                        "@odata.type": "#Microsoft.Graph.Message",
                        "@odata.id": resource,
                        "@odata.etag": f'W/"{message.seq}"',
                        "id": message.id,
                    },
                    "clientState": subscription.client_state,
                    "tenantId": "7e1c5a2b-3f4d-4c8e-9a6b-0d2f1e3c4b5a",
                }
                self._enqueue(subscription, change_type, item, subscription.notification_url)

    def lifecycle(self, subscription_id: str, event: str) -> Push:
        """Send a lifecycle notification (``reauthorizationRequired``,
        ``subscriptionRemoved``, ``missed``) to the subscription's lifecycle URL."""
        with self.fake.lock:
            subscription = self.subscriptions[subscription_id]
            item = {
                "subscriptionId": subscription.id,
                "subscriptionExpirationDateTime": _iso(subscription.expires),
                "tenantId": "7e1c5a2b-3f4d-4c8e-9a6b-0d2f1e3c4b5a",
                "clientState": subscription.client_state,
                "lifecycleEvent": event,
            }
            url = subscription.lifecycle_url or subscription.notification_url
            return self._enqueue(subscription, event, item, url)

    def remove(self, subscription_id: str) -> Push:
        """Microsoft removed the subscription (e.g. a password reset): it is gone and
        a ``subscriptionRemoved`` lifecycle notification says so."""
        push = self.lifecycle(subscription_id, "subscriptionRemoved")
        with self.fake.lock:
            self.subscriptions.pop(subscription_id, None)
        return push

    def expire(self, subscription_id: str) -> None:
        """The subscription lapses silently (it was not renewed in time)."""
        with self.fake.lock:
            self.subscriptions[subscription_id].expires = datetime.now(UTC) - timedelta(seconds=1)

    def of(self, address: str, folder: str = "inbox") -> FakeSubscription | None:
        """The live subscription on a user's folder (None if there is none)."""
        with self.fake.lock:
            for subscription in self.subscriptions.values():
                if (
                    subscription.address.lower() == address.lower()
                    and subscription.folder == folder
                    and self._live(subscription)
                ):
                    return subscription
        return None

    # --- routes ---------------------------------------------------------------------------------

    def route(self, method: str, caller: Any, grant: Any, rest: list[str], body: bytes) -> Any:
        from tests.support.fakes.microsoft import Answer

        key = rest[1] if len(rest) == 2 else None
        if len(rest) > 2:
            return Answer.graph_error(400, "BadRequest", "Unsupported subscriptions path.")
        if key is None and method == "POST":
            return self._create(caller, grant, body)
        if key is None and method == "GET":
            with self.fake.lock:
                mine = [
                    s.render()
                    for s in self.subscriptions.values()
                    if s.creator == caller.address and self._live(s)
                ]
            return Answer.json(200, {"value": mine})
        with self.fake.lock:
            subscription = self.subscriptions.get(key or "")
            if subscription is None or not self._live(subscription):
                self.subscriptions.pop(key or "", None)  # Graph deletes expired ones
                return Answer.graph_error(404, "ResourceNotFound", "Object was not found.")
            if subscription.creator != caller.address:
                return Answer.graph_error(403, "ExtensionError", "Operation not permitted.")
            if method == "GET":
                return Answer.json(200, subscription.render())
            if method == "DELETE":
                del self.subscriptions[subscription.id]
                return Answer(204)
            if method == "PATCH":
                fields = _json(body)
                expires = _expiry(fields)
                if isinstance(expires, str):
                    return Answer.graph_error(400, "InvalidRequest", expires)
                subscription.expires = expires
                return Answer.json(200, subscription.render())
        return Answer.graph_error(405, "BadRequest", f"{method} is not supported here.")

    def _create(self, caller: Any, grant: Any, body: bytes) -> Any:
        from tests.support.fakes.microsoft import Answer

        fields = _json(body)
        resource = str(fields.get("resource") or "")
        match = _RESOURCE.fullmatch(resource)
        if not match:
            return Answer.graph_error(400, "InvalidRequest", f"Unsupported resource {resource!r}.")
        address = caller.address if match["owner"].lower() == "me" else unquote(match["user"])
        folder = (match["q"] or match["p"]).lower()
        with self.fake.lock:
            owner = self.fake.users.get(address.lower())
        if owner is None:
            return Answer.graph_error(404, "ResourceNotFound", f"Unknown user {address}.")
        if owner is not caller:
            return Answer.graph_error(403, "ExtensionError", "Operation not permitted.")
        if not {"Mail.Read", "Mail.ReadWrite"} & set(grant.scopes):
            return Answer.graph_error(403, "ExtensionError", "Mail.Read was not granted.")
        if folder not in ("inbox", "sentitems", "drafts"):
            return Answer.graph_error(400, "ErrorInvalidIdMalformed", f"Unknown folder {folder}.")
        change_types = {t.strip() for t in str(fields.get("changeType") or "").split(",")}
        if not change_types or not change_types <= CHANGE_TYPES:
            return Answer.graph_error(400, "InvalidRequest", "changeType is not valid.")
        client_state = str(fields.get("clientState") or "")
        if len(client_state) > 128:
            return Answer.graph_error(400, "InvalidRequest", "clientState is too long.")
        expires = _expiry(fields)
        if isinstance(expires, str):
            return Answer.graph_error(400, "InvalidRequest", expires)
        notification_url = str(fields.get("notificationUrl") or "")
        lifecycle_url = str(fields.get("lifecycleNotificationUrl") or "")
        if not notification_url.startswith(("https://", "http://")):
            return Answer.graph_error(400, "InvalidRequest", "notificationUrl is not a URL.")
        # Outside the lock: the handshake calls back into the product, which may be busy.
        for url in dict.fromkeys(u for u in (notification_url, lifecycle_url) if u):
            refusal = self._validate(url)
            if refusal:
                return Answer.graph_error(400, "ValidationError", refusal)
        subscription = FakeSubscription(
            id=str(uuid.uuid4()),
            address=owner.address,
            creator=caller.address,
            folder=folder,
            resource=resource,
            change_types=change_types,
            notification_url=notification_url,
            lifecycle_url=lifecycle_url,
            client_state=client_state,
            expires=expires,
        )
        with self.fake.lock:
            self.subscriptions[subscription.id] = subscription
        return Answer.json(201, subscription.render())

    def _validate(self, url: str) -> str:
        """Graph's handshake: the reason it fails, or "" when the endpoint passed."""
        token = (
            "Validation: Testing client application reachability for subscription "
            f"Request-Id: {uuid.uuid4()} {secrets.token_urlsafe(8)}"
        )
        separator = "&" if "?" in url else "?"
        try:
            answer = self._http.post(
                f"{url}{separator}validationToken={quote(token, safe='')}",
                data=b"",
                headers={"Content-Type": "text/plain; charset=utf-8"},
                timeout=self.validation_timeout,
            )
        except requests.RequestException as exc:
            with self.fake.lock:
                self.validations.append((url, 0))
            return f"Subscription validation request failed. HTTP request failed: {exc!r}"
        with self.fake.lock:
            self.validations.append((url, answer.status_code))
        if answer.status_code != 200:
            return (
                "Subscription validation request failed. Notification endpoint must respond "
                f"with 200 OK to validation request (got {answer.status_code})."
            )
        if not answer.headers.get("Content-Type", "").startswith("text/plain"):
            return "Subscription validation request failed. Must respond with text/plain."
        if answer.text != token:
            return (
                "Subscription validation request failed. Response must exactly match "
                "validationToken query parameter."
            )
        return ""


def _json(body: bytes) -> dict:
    try:
        value = json.loads(body or b"{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _expiry(fields: dict) -> datetime | str:
    """The requested expiry, or why Graph refuses it."""
    try:
        expires = datetime.fromisoformat(str(fields.get("expirationDateTime") or ""))
    except ValueError:
        return "expirationDateTime is not a date."
    expires = expires if expires.tzinfo else expires.replace(tzinfo=UTC)
    now = datetime.now(UTC)
    if expires <= now:
        return "Subscription expiration must be in the future."
    if expires > now + timedelta(minutes=MAX_MINUTES):
        return f"Subscription expiration can only be {MAX_MINUTES} minutes in the future."
    return expires
