"""The Gmail API client for one mailbox: reads with renewal and backoff, the send made once."""

from __future__ import annotations

import contextlib
import http.client
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import google_auth_httplib2
import httplib2
from django.conf import settings
from google.auth.exceptions import RefreshError
from google.oauth2.credentials import Credentials
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError
from googleapiclient.http import BatchHttpRequest, HttpRequest

from inboxes.credentials import (
    TokenRefresher,
    access_token_for,
    mark_needs_reauth,
    tokens_load,
    tokens_store,
)
from inboxes.models import Mailbox
from inboxes.providers.base import ProviderError, SendOutcomeUnknown
from inboxes.providers.gmail.http import (
    NETWORK_ERRORS,
    NotSent,
    OneShotHttp,
    backoff_delay,
    ca_file,
    http_timeout,
    retryable,
    send_error,
    status_of,
)

log = logging.getLogger(__name__)

READ_RETRIES = 5  # rate limits and 5xx on reads
NETWORK_RETRIES = 2  # connection problems on reads

_sleep = time.sleep  # one place to wait, so tests can watch the backoff without waiting


def bare_message_id(value: str) -> str:
    return "".join(value.split()).strip("<>")


@dataclass
class _BatchRound:
    """What one batch request brought back."""

    found: dict[str, dict] = field(default_factory=dict)
    retry: list[str] = field(default_factory=list)
    retry_errors: list[HttpError] = field(default_factory=list)
    failed: list[HttpError] = field(default_factory=list)


class GmailApi:
    """The Gmail service for one mailbox (or, while connecting, one fresh token)."""

    def __init__(
        self, mailbox: Mailbox | None, *, client: TokenRefresher | None = None, token: str = ""
    ) -> None:
        """``client`` refreshes the mailbox's tokens; ``token`` alone serves a mailbox
        not saved yet (while connecting)."""
        self.mailbox = mailbox
        self._client = client
        # No refresh token, no expiry: the library treats the token as always valid
        # and never refreshes it itself (see the package docstring).
        self._credentials = Credentials(token=token or self._access_token())
        self._read_http = google_auth_httplib2.AuthorizedHttp(
            self._credentials,
            http=httplib2.Http(ca_certs=ca_file(), timeout=http_timeout(), proxy_info=None),
            refresh_status_codes=(),  # a 401 comes back to us (_renew), not to the library
        )
        self._send_http = google_auth_httplib2.AuthorizedHttp(
            self._credentials,
            http=OneShotHttp(http_timeout(), ca_file()),
            refresh_status_codes=(),
        )
        self.service = build(
            "gmail",
            "v1",
            http=self._read_http,
            static_discovery=True,
            cache_discovery=False,
            client_options={"api_endpoint": settings.GMAIL_API_ENDPOINT},
        )
        self.users = self.service.users()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._read_http.http.close()

    # --- tokens ---

    def _access_token(self) -> str:
        assert self.mailbox is not None and self._client is not None
        return access_token_for(self.mailbox, self._client)

    def _renew(self) -> None:
        """Google refused the token: drop it and get another through the lease."""
        if self.mailbox is None:
            raise ProviderError("Google refused the access token it just issued.", permanent=True)
        rejected = self._credentials.token
        self.mailbox.refresh_from_db(fields=["secrets_ciphertext"])
        tokens = tokens_load(self.mailbox)
        if tokens.access_token == rejected:  # not already replaced by another worker
            tokens.expires_at = 0.0
            tokens_store(self.mailbox, tokens)
        self._credentials.token = self._access_token()

    def _reauth(self) -> ProviderError:
        reason = "Google refused a freshly refreshed access token; sign in again to reconnect."
        if self.mailbox is not None:
            mark_needs_reauth(self.mailbox, reason)
        return ProviderError(reason, reauth=True)

    # --- reads ---

    def read(self, request: HttpRequest) -> dict:
        """Execute a read: one token renewal on 401, backoff on rate limits and 5xx.
        Other HTTP errors are raised as HttpError for the caller to judge."""
        renewed = False
        attempt = 0
        network_attempt = 0
        while True:
            try:
                return request.execute(http=self._read_http)
            except HttpError as exc:
                if status_of(exc) == 401:
                    if renewed:
                        raise self._reauth() from exc
                    self._renew()
                    renewed = True
                    continue
                if not retryable(exc) or attempt >= READ_RETRIES:
                    raise
                _sleep(backoff_delay(attempt, exc))
                attempt += 1
            except NETWORK_ERRORS:
                if network_attempt >= NETWORK_RETRIES:
                    raise
                _sleep(backoff_delay(network_attempt, None))
                network_attempt += 1

    def list_all(self, first: HttpRequest, next_page: Callable) -> Iterator[dict]:
        """Every page of a list call, following nextPageToken through ``list_next``."""
        request: HttpRequest | None = first
        while request is not None:
            page = self.read(request)
            yield page
            request = next_page(request, page)

    def get_raw(self, ids: list[str]) -> dict[str, dict]:
        """``messages.get(format=raw)`` for ``ids`` in batch requests; ids that no
        longer exist (404) are left out. Items that hit a rate limit or a 5xx are
        sent again, alone, after a backoff; the others are kept."""
        results: dict[str, dict] = {}
        pending = list(ids)
        attempt = 0
        network_attempt = 0
        renewed = False
        while pending:
            try:
                round_ = self._batch_round(pending)
            except RefreshError as exc:
                # A part answered 401 and the library tried to refresh credentials
                # that cannot refresh: renew through the lease and run it again.
                if renewed:
                    raise self._reauth() from exc
                self._renew()
                renewed = True
                continue
            except HttpError as exc:  # the batch request as a whole
                if status_of(exc) == 401:
                    if renewed:
                        raise self._reauth() from exc
                    self._renew()
                    renewed = True
                    continue
                if not retryable(exc) or attempt >= READ_RETRIES:
                    raise
                _sleep(backoff_delay(attempt, exc))
                attempt += 1
                continue
            except NETWORK_ERRORS:
                if network_attempt >= NETWORK_RETRIES:
                    raise
                _sleep(backoff_delay(network_attempt, None))
                network_attempt += 1
                continue
            results.update(round_.found)
            if round_.failed:
                raise round_.failed[0]
            if round_.retry:
                if attempt >= READ_RETRIES:
                    raise round_.retry_errors[-1]
                _sleep(backoff_delay(attempt, round_.retry_errors[-1]))
                attempt += 1
            pending = round_.retry
        return results

    def _batch_round(self, ids: list[str]) -> _BatchRound:
        outcome = _BatchRound()

        def on_item(request_id: str, response: dict | None, exception: HttpError | None) -> None:
            if exception is None:
                outcome.found[request_id] = response or {}
            elif status_of(exception) == 404:
                log.info("gmail message %s was deleted before it was fetched", request_id)
            elif retryable(exception):
                outcome.retry.append(request_id)
                outcome.retry_errors.append(exception)
            else:
                outcome.failed.append(exception)

        batch = BatchHttpRequest(callback=on_item, batch_uri=settings.GMAIL_BATCH_URI)
        for message_id in ids:
            batch.add(
                self.users.messages().get(userId="me", id=message_id, format="raw"),
                request_id=message_id,
            )
        batch.execute(http=self._read_http)
        return outcome

    # --- the send ---

    def send_once(self, request: HttpRequest) -> dict:
        """Execute the send request exactly once (plus once more after a 401,
        which Google answers before it looks at the message)."""
        for attempt in range(2):
            try:
                return request.execute(http=self._send_http)  # never num_retries
            except HttpError as exc:
                if status_of(exc) == 401 and attempt == 0:
                    self._renew()
                    continue
                if status_of(exc) == 401:
                    raise self._reauth() from exc
                raise send_error(exc) from exc
            except NotSent as exc:
                raise ProviderError(f"Gmail could not be reached; nothing was sent: {exc}") from exc
            except (OSError, http.client.HTTPException) as exc:
                raise SendOutcomeUnknown(
                    "The message went to Gmail but no answer came back "
                    f"({exc!r}); it may have been sent."
                ) from exc
        raise AssertionError("unreachable")
