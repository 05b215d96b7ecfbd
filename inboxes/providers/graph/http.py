"""Microsoft Graph's HTTP layer: the requests session, URLs, errors and per-mailbox slots."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, urlsplit

import requests
from django.conf import settings
from requests.adapters import HTTPAdapter
from urllib3.exceptions import NewConnectionError

from inboxes.models import Mailbox, MailboxKind
from inboxes.providers.base import ProviderError

MAX_CONCURRENT_REQUESTS = 4  # Graph: 4 concurrent requests per mailbox and app
DEFAULT_RETRY_WAIT_SECONDS = 2.0  # 429/503 without Retry-After: 2, 4, 8 s
# Graph error codes that stay the same however often the call is repeated.
PERMANENT_GRAPH_CODES = frozenset(
    {"ErrorAccessDenied", "MailboxNotEnabledForRESTAPI", "MailboxNotSupportedForRESTAPI"}
)


class HttpSession(requests.Session):
    """requests with our trust store, a timeout on every call and no hidden retries."""

    def __init__(self) -> None:
        super().__init__()
        # REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE in the environment would silently
        # replace ``verify`` (and with it OAUTH_CA_FILE).
        self.trust_env = False
        self.verify = settings.OAUTH_CA_FILE or True
        self.default_timeout = float(settings.PROVIDER_HTTP_TIMEOUT)
        # No automatic retries anywhere: a retried POST .../send could send twice.
        adapter = HTTPAdapter(
            pool_connections=1, pool_maxsize=MAX_CONCURRENT_REQUESTS, max_retries=0
        )
        self.mount("https://", adapter)
        self.mount("http://", adapter)

    def request(self, method: Any, url: Any, *args: Any, **kwargs: Any) -> requests.Response:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.default_timeout  # msal passes no timeout of its own
        return super().request(method, url, *args, **kwargs)


def graph_root() -> str:
    return settings.GRAPH_API_ENDPOINT.rstrip("/")


def graph_base(mailbox: Mailbox) -> str:
    """The URL prefix of the mailbox's own resources."""
    if mailbox.kind == MailboxKind.TEAM:
        return f"{graph_root()}/users/{quote(mailbox.address, safe='@')}"
    return f"{graph_root()}/me"


def same_origin(url: str) -> bool:
    """Links Graph hands back must stay on Graph: they are followed with the bearer token."""
    link, root = urlsplit(url), urlsplit(graph_root())
    return (link.scheme, link.netloc.lower()) == (root.scheme, root.netloc.lower())


def json_of(response: requests.Response) -> dict:
    try:
        body = response.json()
    except ValueError as exc:
        raise ProviderError(
            f"Microsoft Graph answered {response.status_code} with something that is not JSON."
        ) from exc
    return body if isinstance(body, dict) else {}


def graph_error(response: requests.Response) -> tuple[str, str]:
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return "", ""
    if isinstance(error, dict):
        return str(error.get("code") or ""), str(error.get("message") or "")
    return str(error or ""), ""


def failure(
    response: requests.Response,
    doing: str,
    *,
    permanent_statuses: frozenset[int] = frozenset({403}),
) -> ProviderError:
    code, message = graph_error(response)
    text = f"Microsoft Graph could not {doing}: {response.status_code} {code} {message}".strip()
    permanent = response.status_code in permanent_statuses or code in PERMANENT_GRAPH_CODES
    return ProviderError(text[:1000], permanent=permanent)


def network_failure(exc: BaseException, doing: str) -> ProviderError:
    return ProviderError(f"Could not reach Microsoft Graph to {doing}: {type(exc).__name__}: {exc}")


def retry_after(response: requests.Response, attempt: int) -> float:
    value = response.headers.get("Retry-After", "").strip()
    if value.isdigit():
        return float(value)
    if value:
        try:
            return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
        except (TypeError, ValueError):
            pass
    return DEFAULT_RETRY_WAIT_SECONDS * 2 ** (attempt - 1)


def never_left(exc: requests.RequestException) -> bool:
    """True when the request cannot have reached Microsoft (no connection was made)."""
    if isinstance(exc, requests.exceptions.ConnectTimeout | requests.exceptions.SSLError):
        return True
    reason = exc.args[0] if exc.args else None
    reason = getattr(reason, "reason", reason)  # urllib3's MaxRetryError wraps the cause
    return isinstance(reason, NewConnectionError)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# Requests per mailbox in this process, across every session, transport and thread.
_slots_lock = threading.Lock()
_slots: dict[str, threading.BoundedSemaphore] = {}


def mailbox_slots(mailbox_id: Any) -> threading.BoundedSemaphore:
    with _slots_lock:
        return _slots.setdefault(
            str(mailbox_id), threading.BoundedSemaphore(MAX_CONCURRENT_REQUESTS)
        )
