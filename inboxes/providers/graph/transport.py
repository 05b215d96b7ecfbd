"""Sending from a Microsoft 365 mailbox: ``GraphTransport``, a draft from our MIME, then send."""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from email.parser import BytesHeaderParser

import requests

from inboxes.providers.base import (
    ProviderError,
    SendOutcomeUnknown,
    SendResult,
    with_bcc_header,
)
from inboxes.providers.graph.client import GraphMailbox
from inboxes.providers.graph.http import failure, json_of, network_failure, never_left

log = logging.getLogger(__name__)


class GraphTransport(GraphMailbox):
    """Sends as one Microsoft 365 mailbox (a context manager)."""

    def __enter__(self) -> GraphTransport:
        self._open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._close()

    def send(
        self,
        raw: bytes,
        *,
        envelope_from: str,
        recipients: list[str],
        before_data: Callable[[], None],
    ) -> SendResult:
        """Draft from our MIME, then send the draft.

        Graph delivers to the MIME's To/Cc/Bcc (there is no separate envelope):
        ``recipients`` that To and Cc leave out go in a Bcc field first.
        """
        raw = with_bcc_header(raw, recipients)
        draft_id, graph_message_id = self._create_draft(raw)
        before_data()
        try:
            response = self._call("POST", self._message_url(draft_id, "/send"), data=b"")
        except requests.RequestException as exc:
            if never_left(exc):
                self._discard_draft(draft_id)
                raise network_failure(exc, "send the message") from exc
            raise SendOutcomeUnknown(
                "The send request went to Microsoft 365 but no answer came back "
                f"({type(exc).__name__}); it may have been sent.",
                message_id=graph_message_id,
            ) from exc
        status = response.status_code
        if 200 <= status < 300:
            ours = BytesHeaderParser().parsebytes(raw).get("Message-ID", "").strip()
            return SendResult(
                accepted=True,
                detail=f"{status} Accepted by Microsoft 365",
                message_id=graph_message_id if graph_message_id != ours else "",
            )
        if status in (500, 502, 504):
            # Graph failed after taking the request: it may or may not have sent it.
            raise SendOutcomeUnknown(
                f"Microsoft 365 answered {status} to the send; it may have been sent.",
                message_id=graph_message_id,
            )
        self._discard_draft(draft_id)
        raise failure(response, "send the message", permanent_statuses=frozenset({400, 403, 413}))

    def _create_draft(self, raw: bytes) -> tuple[str, str]:
        try:
            response = self._call(
                "POST",
                f"{self.base}/messages",
                data=base64.b64encode(raw),
                headers={"Content-Type": "text/plain"},  # Graph's "MIME in base64" form
            )
        except requests.RequestException as exc:
            # A draft sends nothing: trying again later is safe.
            raise network_failure(exc, "create the draft") from exc
        if response.status_code not in (200, 201):
            raise failure(
                response, "create the draft", permanent_statuses=frozenset({400, 403, 413})
            )
        body = json_of(response)
        if not body.get("id"):
            raise ProviderError("Microsoft Graph created a draft without an id.")
        return str(body["id"]), str(body.get("internetMessageId") or "").strip()

    def _discard_draft(self, draft_id: str) -> None:
        """Best effort: a send that certainly failed should not leave a draft behind."""
        try:
            self._throttled("DELETE", self._message_url(draft_id), self._token).close()
        except requests.RequestException as exc:
            log.info("could not delete draft of mailbox %s: %s", self.mailbox.pk, exc)
