"""One mailbox's Graph connection: bearer-token requests with throttling and one 401 retry."""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import quote

import requests
from django.db import transaction

from inboxes.credentials import access_token_for, mark_needs_reauth, tokens_load, tokens_store
from inboxes.models import Mailbox
from inboxes.providers.base import ProviderError
from inboxes.providers.graph.http import (
    HttpSession,
    graph_base,
    mailbox_slots,
    network_failure,
    retry_after,
)
from inboxes.providers.graph.signin import MicrosoftOAuthClient

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 4  # one request and up to three retries on 429/503
MAX_RETRY_WAIT_SECONDS = 30.0  # a longer Retry-After is left to the task's own retry
MAX_TOTAL_WAIT_SECONDS = 60.0


class GraphMailbox:
    """Bearer-token requests to one mailbox, with throttling and one 401 retry."""

    def __init__(self, mailbox: Mailbox) -> None:
        self.mailbox = mailbox
        self.base = graph_base(mailbox)
        self._client = MicrosoftOAuthClient()
        self._slots = mailbox_slots(mailbox.pk)
        self._http: HttpSession | None = None
        self._token = ""

    def _open(self) -> None:
        self._http = HttpSession()
        try:
            # Fails fast (and marks needs_reauth) when the grant is dead.
            self._token = access_token_for(self.mailbox, self._client)
        except BaseException:
            self._close()
            raise

    def _close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    def _once(self, method: str, url: str, token: str, **kwargs: Any) -> requests.Response:
        assert self._http is not None, "use the session as a context manager"
        headers = {**kwargs.pop("headers", {}), "Authorization": f"Bearer {token}"}
        with self._slots:
            return self._http.request(method, url, headers=headers, **kwargs)

    def _throttled(self, method: str, url: str, token: str, **kwargs: Any) -> requests.Response:
        """One request, repeated only while Graph refuses it with 429/503 (so it did
        nothing) and the waits stay bounded; the last answer is returned as it is."""
        waited = 0.0
        attempt = 1
        while True:
            response = self._once(method, url, token, **kwargs)
            if response.status_code not in (429, 503) or attempt >= MAX_ATTEMPTS:
                return response
            wait = retry_after(response, attempt)
            if wait > MAX_RETRY_WAIT_SECONDS or waited + wait > MAX_TOTAL_WAIT_SECONDS:
                return response
            log.info(
                "Graph answered %s for mailbox %s; retrying in %.1f s",
                response.status_code,
                self.mailbox.pk,
                wait,
            )
            response.close()
            time.sleep(wait)  # outside the slot: a waiting request does not hold one
            waited += wait
            attempt += 1

    def _call(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        """A request with the current token; a 401 gets one fresh token, a second
        401 means the user must sign in again. Network errors propagate."""
        response = self._throttled(method, url, self._token, **kwargs)
        if response.status_code != 401:
            return response
        response.close()
        self._token = self._renew_token(self._token)
        response = self._throttled(method, url, self._token, **kwargs)
        if response.status_code == 401:
            self._give_up_auth()
        return response

    def _request(self, method: str, url: str, doing: str, **kwargs: Any) -> requests.Response:
        try:
            return self._call(method, url, **kwargs)
        except requests.RequestException as exc:
            raise network_failure(exc, doing) from exc

    def _renew_token(self, refused: str) -> str:
        """Expire the stored access token Graph refused, then get a new one.

        Only if it is still the stored one: another worker may have refreshed in
        the meantime, and writing our copy back would replace its rotated
        refresh token with the dead one. The row lock closes that window.
        """
        with transaction.atomic():
            row = Mailbox.objects.select_for_update().get(pk=self.mailbox.pk)
            tokens = tokens_load(row)
            if tokens.access_token == refused:
                tokens.expires_at = 0
                tokens_store(row, tokens)
        return access_token_for(self.mailbox, self._client)

    def _give_up_auth(self) -> None:
        reason = (
            "Microsoft 365 refused this mailbox's sign-in twice (401 from Graph). "
            "Sign in again to reconnect it."
        )
        mark_needs_reauth(self.mailbox, reason)
        raise ProviderError(reason, reauth=True)

    def _message_url(self, key: str, suffix: str = "") -> str:
        return f"{self.base}/messages/{quote(key, safe='')}{suffix}"
