"""A fake Google Cloud Pub/Sub push subscription for Gmail push, on 127.0.0.1.

Gmail (the fake in google.py) publishes ``{"emailAddress", "historyId"}`` to the
watch's topic; this push subscription POSTs it to the app's ``/hooks/gmail/`` as
Pub/Sub does: the JSON envelope ``{"message": {"data": <base64 JSON>, "messageId",
"publishTime", ...}, "subscription"}`` with ``Authorization: Bearer <OIDC token>``,
an RS256 JWT that names the subscription's service account (``email``,
``email_verified``), the audience, Google as the issuer, and that is signed by a
test RSA key. The fake Google serves that key's certificate at
``/oauth2/v1/certs``, which the ``fake_pubsub`` fixture installs as
``GOOGLE_OIDC_CERTS_URL`` (the trusted one); ``forger`` is a key nobody trusts.

The tests reach it directly: ``token(...)`` (with any claim changed), ``envelope``,
``push`` (one delivery; returns the app's status code) and ``pushes`` (every
delivery and its answer). ``sender`` decides how a push travels: an HTTP POST to
``endpoint`` (a live server) by default, or the Django test client.
"""

from __future__ import annotations

import base64
import functools
import itertools
import json
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt
from google.auth import jwt as google_jwt

from tests.support.fakes.google import FakeGoogle

TOPIC = "projects/postkamer-test/topics/gmail-push"
SUBSCRIPTION = "projects/postkamer-test/subscriptions/gmail-push-postkamer"
SERVICE_ACCOUNT = "gmail-push@postkamer-test.iam.gserviceaccount.com"
GOOGLE_ISSUER = "https://accounts.google.com"
CERTS_PATH = "/oauth2/v1/certs"

Sender = Callable[[str, bytes, dict[str, str]], int]


@dataclass(frozen=True)
class SigningKey:
    """An RSA key with its self-signed certificate, as Google publishes its keys."""

    kid: str
    private_pem: bytes
    cert_pem: str


@functools.cache
def signing_key(name: str) -> SigningKey:
    """One key per name for the whole session (generating RSA keys is slow)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name}.test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return SigningKey(
        kid=secrets.token_hex(20),
        private_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        cert_pem=cert.public_bytes(serialization.Encoding.PEM).decode(),
    )


@dataclass
class Push:
    message_id: str
    data: dict
    status: int


def http_post(url: str, body: bytes, headers: dict[str, str]) -> int:
    """POST as Pub/Sub does; the status code the endpoint answered."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with opener.open(request, timeout=10) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


@dataclass
class FakePubSub:
    """One topic with one push subscription, authenticated with an OIDC token."""

    topic: str = TOPIC
    subscription: str = SUBSCRIPTION
    service_account: str = SERVICE_ACCOUNT
    endpoint: str = ""  # where pushes go; also the token's default audience
    audience: str = ""  # the subscription's audience setting ("": the endpoint)
    key: SigningKey = field(default_factory=lambda: signing_key("google-oidc"))
    forger: SigningKey = field(default_factory=lambda: signing_key("forger"))
    sender: Sender = http_post
    pushes: list[Push] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._ids = itertools.count(int(time.time() * 1000))
        self._lock = threading.Lock()

    def certs(self) -> dict[str, str]:
        """What Google's certs endpoint answers: key id -> PEM certificate."""
        return {self.key.kid: self.key.cert_pem}

    def token(
        self,
        *,
        audience: str | None = None,
        issuer: str = GOOGLE_ISSUER,
        email: str | None = None,
        email_verified: bool = True,
        issued_at: float | None = None,
        lifetime: float = 3600,
        key: SigningKey | None = None,
        kid: str | None = None,
        **claims: Any,
    ) -> str:
        """The OIDC token Pub/Sub sends with a push, with any claim changed; ``key``
        signs it (``forger``: a key nobody trusts), under ``kid`` if given."""
        now = time.time() if issued_at is None else issued_at
        payload = {
            "aud": audience if audience is not None else (self.audience or self.endpoint),
            "azp": "104713046591583279311",
            "email": email if email is not None else self.service_account,
            "email_verified": email_verified,
            "iat": int(now),
            "exp": int(now + lifetime),
            "iss": issuer,
            "sub": "104713046591583279311",
            **claims,
        }
        signing = key or self.key
        signer = crypt.RSASigner.from_string(signing.private_pem, key_id=kid or signing.kid)
        return google_jwt.encode(signer, payload).decode()

    def envelope(self, data: dict, message_id: str | None = None) -> tuple[str, bytes]:
        """(messageId, the push request's body)."""
        with self._lock:
            message_id = message_id or str(next(self._ids))
        published = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        encoded = base64.b64encode(json.dumps(data).encode()).decode()
        message = {
            "attributes": {},
            "data": encoded,
            "messageId": message_id,
            "message_id": message_id,
            "publishTime": published,
            "publish_time": published,
        }
        return message_id, json.dumps(
            {"message": message, "subscription": self.subscription}
        ).encode()

    def push(
        self,
        data: dict,
        *,
        token: str | None = None,
        message_id: str | None = None,
        authorization: str | None = None,
    ) -> int:
        """Deliver one message to the endpoint; the status code it answered."""
        message_id, body = self.envelope(data, message_id)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "APIs-Google; (+https://developers.google.com/webmasters/APIs-Google.html)",
            "Authorization": authorization
            if authorization is not None
            else f"Bearer {token or self.token()}",
        }
        status = self.sender(self.endpoint, body, headers)
        with self._lock:
            self.pushes.append(Push(message_id, data, status))
        return status

    def publish(self, topic: str, data: dict) -> None:
        """Gmail published to ``topic``: the subscription pushes it (if it has an endpoint)."""
        if topic == self.topic and self.endpoint:
            self.push(data)


def client_sender(client: Any) -> Sender:
    """Pushes through Django's test client (same process, same transaction): for
    pushes of mail the test delivers itself (``deliver`` pushes in the caller's
    thread; a send's SENT copy is published from a thread of its own, which wants
    a live server)."""

    def send(url: str, body: bytes, headers: dict[str, str]) -> int:
        response = client.post(
            url,
            data=body,
            content_type=headers.get("Content-Type", "application/json"),
            headers={k: v for k, v in headers.items() if k.lower() != "content-type"},
        )
        return int(response.status_code)

    return send


@pytest.fixture
def fake_pubsub(fake_google: FakeGoogle, settings) -> Iterator[FakePubSub]:
    """Gmail push set up: the topic, the service account and the trusted certs URL in
    the settings, and a Pub/Sub with no endpoint yet (the test sets one)."""
    pubsub = FakePubSub()
    fake_google.pubsub = pubsub
    settings.GMAIL_PUBSUB_TOPIC = pubsub.topic
    settings.GMAIL_PUSH_SERVICE_ACCOUNT = pubsub.service_account
    settings.GOOGLE_OIDC_CERTS_URL = fake_google.base_url + CERTS_PATH
    yield pubsub
    fake_google.pubsub = None
