"""The OIDC token of a Pub/Sub push: who sent it, checked with google-auth.

Pub/Sub signs each push for an authenticated push subscription with a Google ID
token (an RS256 JWT) for the subscription's service account. It is accepted only
when google-auth's ``jwt.decode`` finds it signed by one of Google's current keys
(``GOOGLE_OIDC_CERTS_URL``), not expired (``exp``/``iat``, a little clock skew),
for our audience; issued by Google (``iss``); and naming the configured service
account with a verified email. Anything else is refused before the body is read.

Google's keys are cached in this process for as long as the certs answer's
``Cache-Control: max-age`` says (else ``DEFAULT_CERTS_TTL``), so many pushes cost
one fetch. A token naming a key we do not know (Google rotated its keys) fetches
them again once, at most every ``REFETCH_MIN_SECONDS``: forged tokens with made-up
key ids cannot turn into a stream of requests to Google.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

import requests
from django.conf import settings
from google.auth import exceptions as google_exceptions
from google.auth import jwt as google_jwt

from inboxes.providers.gmail.http import http_timeout, requests_session

log = logging.getLogger(__name__)

GOOGLE_ISSUERS = frozenset({"accounts.google.com", "https://accounts.google.com"})
CLOCK_SKEW_SECONDS = 30
DEFAULT_CERTS_TTL = 3600.0
MAX_CERTS_TTL = 86400.0
REFETCH_MIN_SECONDS = 60.0


class PushRefused(Exception):
    """The push is not from our subscription: answered with ``status`` and nothing done."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


@dataclass
class _Certs:
    keys: dict[str, str]
    fresh_until: float  # time.monotonic()
    fetched_at: float


_certs: dict[str, _Certs] = {}
_certs_lock = threading.Lock()


def forget_certs() -> None:
    """Drop the cached keys (tests; a changed certs URL is cached apart anyway)."""
    with _certs_lock:
        _certs.clear()


def _max_age(cache_control: str) -> float | None:
    found = re.search(r"(?:^|[,\s])max-age=(\d+)", cache_control or "")
    return float(found.group(1)) if found else None


def _fetch(url: str) -> _Certs:
    try:
        with requests_session() as session:
            response = session.get(url, timeout=http_timeout())
        response.raise_for_status()
        keys = response.json()
    except (requests.RequestException, ValueError) as exc:
        raise PushRefused(
            503, "unavailable", f"Google's signing keys could not be read: {exc}"
        ) from exc
    if not isinstance(keys, dict) or not all(isinstance(v, str) for v in keys.values()):
        raise PushRefused(503, "unavailable", "Google's signing keys came in an unknown shape.")
    ttl = _max_age(response.headers.get("Cache-Control", ""))
    ttl = DEFAULT_CERTS_TTL if ttl is None else min(ttl, MAX_CERTS_TTL)
    now = time.monotonic()
    log.info("fetched %d google signing keys from %s (kept %.0f s)", len(keys), url, ttl)
    return _Certs(keys=keys, fresh_until=now + ttl, fetched_at=now)


def google_certs(url: str, *, unknown_kid: str = "") -> dict[str, str]:
    """Google's signing certificates (key id -> PEM), from the cache when fresh.

    ``unknown_kid``: a token names a key the cache lacks; fetch again unless the
    cache was fetched very recently. The lock makes many concurrent pushes wait
    for one fetch instead of each making its own.
    """
    with _certs_lock:
        cached = _certs.get(url)
        now = time.monotonic()
        stale = cached is None or cached.fresh_until <= now
        rotated = (
            cached is not None
            and bool(unknown_kid)
            and unknown_kid not in cached.keys
            and now - cached.fetched_at >= REFETCH_MIN_SECONDS
        )
        if stale or rotated:
            cached = _certs[url] = _fetch(url)
        assert cached is not None
        return cached.keys


def _unverified_header(token: str) -> dict[str, Any]:
    try:
        head = token.split(".")[0]
        header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except (ValueError, IndexError) as exc:
        raise PushRefused(401, "not_authenticated", "The push token is not a JWT.") from exc
    if not isinstance(header, dict):
        raise PushRefused(401, "not_authenticated", "The push token is not a JWT.")
    return header


def bearer_token(authorization: str) -> str:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise PushRefused(
            401, "not_authenticated", "A push must carry its OIDC token (Authorization: Bearer)."
        )
    return token.strip()


def verify_push_token(token: str, *, audience: str, service_account: str) -> dict[str, Any]:
    """The token's claims when Google signed it for our subscription; else PushRefused."""
    if not service_account:
        raise PushRefused(
            403,
            "permission_denied",
            "Gmail push is not set up on this server (GMAIL_PUSH_SERVICE_ACCOUNT).",
        )
    url = settings.GOOGLE_OIDC_CERTS_URL
    kid = str(_unverified_header(token).get("kid") or "")
    certs = google_certs(url)
    if kid and kid not in certs:
        certs = google_certs(url, unknown_kid=kid)
    try:
        claims = google_jwt.decode(
            token, certs=certs, audience=audience, clock_skew_in_seconds=CLOCK_SKEW_SECONDS
        )
    except (google_exceptions.GoogleAuthError, ValueError, TypeError) as exc:
        raise PushRefused(401, "not_authenticated", f"The push token is not valid: {exc}") from exc
    if claims.get("iss") not in GOOGLE_ISSUERS:
        raise PushRefused(401, "not_authenticated", "The push token was not issued by Google.")
    if str(claims.get("email") or "").lower() != service_account.lower() or claims.get(
        "email_verified"
    ) not in (True, "true"):
        raise PushRefused(
            403, "permission_denied", "The push token is not from the Gmail push service account."
        )
    return claims
