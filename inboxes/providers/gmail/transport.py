"""Sending from a Gmail mailbox: ``GmailTransport`` (``MailTransport``)."""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from email import policy
from email.message import Message
from email.parser import BytesHeaderParser

from googleapiclient.errors import HttpError
from googleapiclient.http import MediaInMemoryUpload

from inboxes.providers.base import ProviderError, SendResult, with_bcc_header
from inboxes.providers.gmail.api import GmailApi, bare_message_id
from inboxes.providers.gmail.http import NETWORK_ERRORS, gmail_errors
from inboxes.providers.gmail.mailbox import GmailMailbox

log = logging.getLogger(__name__)

# Above this the raw message goes as a media upload rather than inside the JSON body.
JSON_SEND_MAX_BYTES = 4 * 1024 * 1024


class GmailTransport(GmailMailbox):
    """Sends mail from one Gmail mailbox (``MailTransport``); a context manager."""

    def send(
        self,
        raw: bytes,
        *,
        envelope_from: str,
        recipients: list[str],
        before_data: Callable[[], None],
    ) -> SendResult:
        raw = with_bcc_header(raw, recipients)
        api = self.api
        headers = BytesHeaderParser(policy=policy.default).parsebytes(raw)
        # Looked up before anything is sent: a failure here is safe to retry.
        thread_id = self._thread_of(api, headers)
        metadata: dict[str, str] = {"threadId": thread_id} if thread_id else {}
        messages = api.users.messages()
        if len(raw) > JSON_SEND_MAX_BYTES:
            request = messages.send(
                userId="me",
                body=metadata,
                media_body=MediaInMemoryUpload(raw, mimetype="message/rfc822", resumable=False),
            )
        else:
            body = {**metadata, "raw": base64.urlsafe_b64encode(raw).decode("ascii")}
            request = messages.send(userId="me", body=body)
        before_data()
        sent = api.send_once(request)
        result = SendResult(
            accepted=True,
            detail=f"Gmail accepted it (message {sent.get('id')}, thread {sent.get('threadId')}).",
        )
        ours = bare_message_id(str(headers.get("Message-ID") or ""))
        stored = self._stored_message_id(api, str(sent.get("id") or ""))
        if stored and stored != ours:
            result.message_id = f"<{stored}>"
        return result

    def _thread_of(self, api: GmailApi, headers: Message) -> str:
        """The Gmail thread of the message this one replies to ("" if none is found)."""
        candidates = [str(headers.get("In-Reply-To") or "")]
        references = str(headers.get("References") or "").split()
        candidates += list(reversed(references))[:1]
        for candidate in candidates:
            bare = bare_message_id(candidate)
            if not bare:
                continue
            with gmail_errors("find the thread to reply in"):
                found = api.read(
                    api.users.messages().list(
                        userId="me", q=f"rfc822msgid:{bare}", includeSpamTrash=True, maxResults=1
                    )
                )
            if found.get("messages"):
                return str(found["messages"][0].get("threadId") or "")
        return ""

    def _stored_message_id(self, api: GmailApi, gmail_id: str) -> str:
        """The Message-ID Gmail stored (it may replace ours). Best effort: the
        message is sent either way, so a failure here only costs the check."""
        if not gmail_id:
            return ""
        try:
            stored = api.read(
                api.users.messages().get(
                    userId="me", id=gmail_id, format="metadata", metadataHeaders=["Message-ID"]
                )
            )
        except (ProviderError, HttpError, *NETWORK_ERRORS) as exc:
            log.warning("could not read back sent gmail message %s: %r", gmail_id, exc)
            return ""
        for header in stored.get("payload", {}).get("headers", []):
            if str(header.get("name", "")).lower() == "message-id":
                return bare_message_id(str(header.get("value", "")))
        return ""
