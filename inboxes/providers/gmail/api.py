"""The Gmail API client for one mailbox: reads with renewal and backoff, the send made once."""

from __future__ import annotations

import binascii
import contextlib
import http.client
import logging
import secrets
import ssl
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import google_auth_httplib2
import httplib2
from django.conf import settings
from google.oauth2.credentials import Credentials
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError
from googleapiclient.http import HttpRequest

from inboxes.credentials import (
    TokenRefresher,
    access_token_for,
    mark_needs_reauth,
    tokens_load,
    tokens_store,
)
from inboxes.models import Mailbox
from inboxes.providers.base import ProviderError, SendOutcomeUnknown
from inboxes.providers.gmail.batch import (
    BatchFormatError,
    BatchPart,
    BatchSplitter,
    batch_body,
    boundary_of,
    raw_message,
    response_chunks,
)
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

# Batch requests in flight: the one whose answer is being read and the next one.
FETCH_AHEAD = 2
# What a message is expected to weigh until this session has seen some.
FETCH_SIZE_GUESS = 32 * 1024

_sleep = time.sleep  # one place to wait, so tests can watch the backoff without waiting


def bare_message_id(value: str) -> str:
    return "".join(value.split()).strip("<>")


@dataclass
class FetchedRaw:
    """One message of ``GmailApi.fetch_raw``."""

    id: str
    raw: bytes
    internal_ms: int | None


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
        self._sizes_seen = 0
        self._tls_context: ssl.SSLContext | None = None
        self._bytes_seen = 0

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._read_http.http.close()

    def bearer(self) -> str:
        return f"Bearer {self._credentials.token}"

    def tls_context(self) -> ssl.SSLContext:
        """The batch connections' TLS context: made once per session (loading the CA
        store takes time and memory), not per fetch."""
        if self._tls_context is None:
            self._tls_context = ssl.create_default_context(cafile=ca_file())
        return self._tls_context

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

    # --- fetching messages ---

    def fetch_raw(
        self, ids: Sequence[str], *, batch_size: int, batch_bytes: int
    ) -> Iterator[FetchedRaw]:
        """``messages.get(format=raw)`` of ``ids`` in batch requests, each message as
        soon as its part of the answer is in (see batch.py).

        A batch asks for at most ``batch_size`` messages and about ``batch_bytes``
        (by the sizes seen so far: Gmail's lists give none; a bigger one alone).
        While one answer is read, the next request is already with Google
        (``FETCH_AHEAD``): its answer waits in the socket, not in this process.
        Messages deleted since they were listed (404) are left out; parts that
        hit a rate limit or a 5xx are asked for again after a backoff, and so is
        the rest of an answer that breaks off; the ones already handed on stay."""
        fetch = _BatchFetch(self, batch_size, batch_bytes)
        try:
            yield from fetch.run(ids)
        finally:
            fetch.close()

    def learn_size(self, size: int) -> None:
        self._sizes_seen += 1
        self._bytes_seen += size

    def sizes_known(self) -> bool:
        return self._sizes_seen > 0

    def size_guess(self) -> int:
        """What a message not fetched yet is expected to weigh (the mean so far)."""
        if not self._sizes_seen:
            return FETCH_SIZE_GUESS
        return max(self._bytes_seen // self._sizes_seen, 1)

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


@dataclass
class _Request:
    """A batch request sent, its answer not read yet."""

    ids: list[str]
    bearer: str  # the token it carried: a 401 for an older one than now needs no renewal
    conn: http.client.HTTPConnection | None
    reused: bool  # over a kept-alive connection, which the server may have closed
    error: Exception | None = None  # the send failed


class _BatchFetch:
    """The batch requests of one ``GmailApi.fetch_raw``: at most ``FETCH_AHEAD`` in
    flight, answers read in the order they were asked for."""

    def __init__(self, api: GmailApi, batch_size: int, batch_bytes: int) -> None:
        self.api = api
        self.batch_size = max(batch_size, 1)
        self.batch_bytes = batch_bytes
        uri = urlsplit(settings.GMAIL_BATCH_URI)
        self._uri = settings.GMAIL_BATCH_URI
        self._https = uri.scheme == "https"
        self._host, self._port = uri.hostname or "", uri.port
        self._target = uri.path + (f"?{uri.query}" if uri.query else "")
        base = urlsplit(settings.GMAIL_API_ENDPOINT).path.rstrip("/")
        self._part_path = f"{base}/gmail/v1/users/me/messages/"
        self._context = api.tls_context() if self._https else None
        self._idle: list[http.client.HTTPConnection] = []
        self._inflight: deque[_Request] = deque()
        self.attempt = 0  # backoffs for rate limits and 5xx
        self.network_attempt = 0
        self.renewed = False
        self._retry_error: HttpError | None = None

    def close(self) -> None:
        for request in self._inflight:
            if request.conn is not None:
                request.conn.close()
        for conn in self._idle:
            conn.close()
        self._inflight.clear()
        self._idle.clear()

    def run(self, ids: Sequence[str]) -> Iterator[FetchedRaw]:
        pending = deque(ids)
        while pending or self._inflight:
            # Until an answer has told what this mailbox's messages weigh, one at a
            # time: the next batch is sized by what the first one brought.
            ahead = FETCH_AHEAD if self.api.sizes_known() else 1
            while pending and len(self._inflight) < ahead:
                self._send(self._next_ids(pending))
            request = self._inflight.popleft()
            again = yield from self._receive(request)
            pending.extendleft(reversed(again))

    def _next_ids(self, pending: deque[str]) -> list[str]:
        """The next batch: up to ``batch_size`` ids and about ``batch_bytes``."""
        guess = self.api.size_guess()
        ids = [pending.popleft()]
        while pending and len(ids) < self.batch_size and (len(ids) + 1) * guess <= self.batch_bytes:
            ids.append(pending.popleft())
        return ids

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        if self._idle:
            return self._idle.pop(), True
        if self._https:
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                self._host, self._port, timeout=http_timeout(), context=self._context
            )
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=http_timeout())
        return conn, False

    def _send(self, ids: list[str]) -> None:
        boundary = "postkamer_" + secrets.token_hex(12)
        body = batch_body(
            boundary,
            [(key, f"{self._part_path}{quote(key, safe='')}?format=raw&alt=json") for key in ids],
        )
        bearer = self.api.bearer()
        headers = {
            "Content-Type": f'multipart/mixed; boundary="{boundary}"',
            "Authorization": bearer,
            "Accept-Encoding": "gzip",
            "User-Agent": "postkamer (gzip)",
        }
        conn, reused = self._connection()
        try:
            conn.request("POST", self._target, body=body, headers=headers)
        except NETWORK_ERRORS as exc:
            conn.close()
            self._inflight.append(_Request(ids, bearer, None, reused, exc))
            return
        self._inflight.append(_Request(ids, bearer, conn, reused))

    def _receive(self, request: _Request) -> Generator[FetchedRaw, None, list[str]]:
        received: set[str] = set()
        again: list[str] = []
        self._retry_error = None
        try:
            if request.error is not None:
                raise request.error
            assert request.conn is not None
            response = request.conn.getresponse()
            if response.status != 200:
                content = response.read()
                self._keep(request.conn, response)
                error = HttpError(httplib2.Response(response), content, uri=self._uri)
                self._whole_failed(request, error)
                return list(request.ids)
            splitter = BatchSplitter(boundary_of(response.getheader("content-type") or ""))
            asked = set(request.ids)
            for chunk in response_chunks(response):
                parts = splitter.feed(chunk)
                del chunk
                parts.reverse()
                while parts:
                    part = parts.pop()
                    yield from self._part(part, request, asked, received, again)
            splitter.close()
            self._keep(request.conn, response)
        except NETWORK_ERRORS as exc:
            if request.conn is not None:
                request.conn.close()
            missing = [key for key in request.ids if key not in received]
            if request.reused and not received and not isinstance(exc, BatchFormatError):
                # A kept-alive connection the server had closed: ask again at once,
                # on a new connection (the idle ones are likely closed too).
                for conn in self._idle:
                    conn.close()
                self._idle.clear()
                return again + missing
            if self.network_attempt >= NETWORK_RETRIES:
                if isinstance(exc, BatchFormatError):
                    raise ProviderError(
                        f"Gmail's answer to a batch of {len(request.ids)} messages broke off "
                        f"after {len(received)} ({exc}); the rest is fetched at the next sync."
                    ) from exc
                raise
            _sleep(backoff_delay(self.network_attempt, None))
            self.network_attempt += 1
            return again + missing
        if self._retry_error is not None:  # rate-limited or 5xx parts: wait, then again
            if self.attempt >= READ_RETRIES:
                raise self._retry_error
            _sleep(backoff_delay(self.attempt, self._retry_error))
            self.attempt += 1
        elif not again:
            self.attempt = self.network_attempt = 0  # a clean answer: the budget is per problem
        return again  # (parts refused for an old token go again at once)

    def _keep(self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse) -> None:
        if response.will_close:
            conn.close()
        else:
            self._idle.append(conn)

    def _unauthorized(self, request: _Request, exc: HttpError) -> None:
        """Google refused the token ``request`` carried: renew it once (not again
        for a request sent before the renewal); a second refusal needs a sign-in."""
        if request.bearer != self.api.bearer():
            return
        if self.renewed:
            raise self.api._reauth() from exc
        self.api._renew()
        self.renewed = True

    def _whole_failed(self, request: _Request, exc: HttpError) -> None:
        """The batch request as a whole was refused: renew, wait, or raise."""
        if status_of(exc) == 401:
            self._unauthorized(request, exc)
            return
        if not retryable(exc) or self.attempt >= READ_RETRIES:
            raise exc
        _sleep(backoff_delay(self.attempt, exc))
        self.attempt += 1

    def _part(
        self,
        part: BatchPart,
        request: _Request,
        asked: set[str],
        received: set[str],
        again: list[str],
    ) -> Generator[FetchedRaw, None, None]:
        key = part.content_id
        if key not in asked or key in received:
            raise BatchFormatError(f"the batch answer has a part nobody asked for ({key!r})")
        received.add(key)
        if part.status == 200:
            try:
                found = raw_message(part.body)
            except (ValueError, binascii.Error) as exc:
                raise BatchFormatError(f"the answer for message {key} is not its JSON") from exc
            part.body = b""
            if found is not None:  # no raw: nothing to store
                raw, internal = found
                self.api.learn_size(len(raw))
                yield FetchedRaw(key, raw, internal)
            return
        response = httplib2.Response({**part.headers, "status": str(part.status)})
        response.reason = part.reason
        error = HttpError(response, part.body, uri=f"{self._part_path}{key}")
        if part.status == 404:
            log.info("gmail message %s was deleted before it was fetched", key)
        elif part.status == 401:
            self._unauthorized(request, error)
            again.append(key)
        elif retryable(error):
            again.append(key)
            if self._retry_error is None or error.resp.get("retry-after"):
                self._retry_error = error  # the wait a part asked for counts
        else:
            raise error
