"""Gmail's HTTP layer: settings-driven transports, the one-shot send, errors, backoff.

See the package docstring for why the send request goes through ``OneShotHttp``
and why the environment never picks the CA bundle or a proxy.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import random
import ssl
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import google.auth.transport.requests
import httplib2
import requests
from django.conf import settings
from googleapiclient.errors import HttpError

from inboxes.providers.base import ProviderError, SendOutcomeUnknown

BACKOFF_BASE_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 32.0
_RATE_LIMIT_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})
NETWORK_ERRORS = (OSError, httplib2.HttpLib2Error, http.client.HTTPException)


# --- settings-driven HTTP ---------------------------------------------------------------


def ca_file() -> str | None:
    return settings.OAUTH_CA_FILE or None


def http_timeout() -> float:
    return float(settings.PROVIDER_HTTP_TIMEOUT)


def requests_session() -> requests.Session:
    session = requests.Session()
    # requests would let REQUESTS_CA_BUNDLE replace session.verify and send through
    # environment proxies; only the settings decide where Google traffic goes.
    session.trust_env = False
    session.verify = ca_file() or True
    return session


class TokenEndpointRequest(google.auth.transport.requests.Request):
    """google-auth's requests transport with our timeout (its default is 120 s)."""

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Any:
        return super().__call__(
            url,
            method=method,
            body=body,
            headers=headers,
            timeout=timeout or http_timeout(),
            **kwargs,
        )


class NotSent(Exception):
    """The connection failed before any byte of the request left."""


class OneShotHttp:
    """An httplib2-shaped ``request()`` that sends each request exactly once.

    httplib2 sends a request again, on a new connection, when the server closes
    the connection without answering (its ``RemoteDisconnected`` handling); for
    ``messages.send`` that is a second copy of the mail in the recipient's
    inbox. Here every request gets its own connection: a failure while
    connecting raises ``NotSent`` (safe to try again later), anything after is
    left to the caller as an unknown outcome.
    """

    def __init__(self, timeout: float, ca_file: str | None) -> None:
        self.timeout = timeout
        self._context = ssl.create_default_context(cafile=ca_file)

    def request(
        self,
        uri: str,
        method: str = "GET",
        body: str | bytes | None = None,
        headers: Mapping[str, str] | None = None,
        redirections: int = 0,
        connection_type: Any = None,
    ) -> tuple[httplib2.Response, bytes]:
        parts = urlsplit(uri)
        host = parts.hostname or ""
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        if parts.scheme == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                host, parts.port, timeout=self.timeout, context=self._context
            )
        else:
            conn = http.client.HTTPConnection(host, parts.port, timeout=self.timeout)
        if isinstance(body, str):
            body = body.encode("utf-8")  # http.client would encode a str body as Latin-1
        try:
            try:
                conn.connect()
            except OSError as exc:  # refused, unreachable, TLS handshake failed
                raise NotSent(str(exc) or type(exc).__name__) from exc
            sent = {k: v for k, v in (headers or {}).items() if k.lower() != "accept-encoding"}
            # httplib2 would decompress a gzip answer; this small answer needs none.
            sent["accept-encoding"] = "identity"
            conn.request(method, target, body=body, headers=sent)
            response = conn.getresponse()
            content = response.read()
        finally:
            conn.close()
        return httplib2.Response(response), content


# --- errors --------------------------------------------------------------------------------


def _error_data(exc: HttpError) -> dict:
    try:
        data = json.loads(exc.content or b"{}")
    except ValueError:
        return {}
    error = data.get("error") if isinstance(data, dict) else None
    return error if isinstance(error, dict) else {}


def _reasons(exc: HttpError) -> set[str]:
    return {
        str(item.get("reason", ""))
        for item in _error_data(exc).get("errors", [])
        if isinstance(item, dict)
    }


def status_of(exc: HttpError) -> int:
    return int(exc.resp.status)


def _rate_limited(exc: HttpError) -> bool:
    return status_of(exc) == 429 or (
        status_of(exc) == 403 and bool(_reasons(exc) & _RATE_LIMIT_REASONS)
    )


def retryable(exc: HttpError) -> bool:
    return _rate_limited(exc) or status_of(exc) >= 500 or status_of(exc) == 408


def _retry_after(exc: HttpError) -> float | None:
    value = exc.resp.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        return max((parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds(), 0.0)
    except (TypeError, ValueError):
        return None


def _describe(exc: HttpError) -> str:
    message = _error_data(exc).get("message") or exc.reason or ""
    return f"{status_of(exc)} {message}".strip()


def _read_error(exc: HttpError, action: str) -> ProviderError:
    """A read that failed for good. 400/403 (API disabled, wrong scopes, mail
    service off) will fail the same way next time; everything else may pass."""
    permanent = status_of(exc) in (400, 403) and not _rate_limited(exc)
    return ProviderError(f"Gmail could not {action}: {_describe(exc)}", permanent=permanent)


@contextlib.contextmanager
def gmail_errors(action: str) -> Iterator[None]:
    try:
        yield
    except HttpError as exc:
        raise _read_error(exc, action) from exc
    except NETWORK_ERRORS as exc:
        raise ProviderError(f"Gmail could not be reached to {action}: {exc!r}") from exc


def backoff_delay(attempt: int, exc: HttpError | None) -> float:
    """Seconds to wait before attempt ``attempt + 1``; raises when Google asks for
    longer than a worker should block (the task is retried later instead)."""
    asked = _retry_after(exc) if exc is not None else None
    if asked is not None:
        if asked > BACKOFF_MAX_SECONDS:
            raise ProviderError(f"Gmail asks to wait {asked:.0f} s: {_describe(exc)}")
        return asked
    return min(BACKOFF_BASE_SECONDS * 2**attempt, BACKOFF_MAX_SECONDS) * (
        0.5 + random.random() / 2  # noqa: S311 - jitter, not security
    )


def send_error(exc: HttpError) -> ProviderError:
    """429/503 and rate limits are refusals before the message was taken: retry
    later. 500/502/504 may come after Gmail acted: unknown. Other 4xx: permanent."""
    detail = _describe(exc)
    if _rate_limited(exc) or status_of(exc) == 503:
        return ProviderError(f"Gmail refused the message for now ({detail}); nothing was sent.")
    if status_of(exc) >= 500:
        return SendOutcomeUnknown(f"Gmail answered {detail}; the message may have been sent.")
    return ProviderError(f"Gmail refused the message: {detail}", permanent=True)
