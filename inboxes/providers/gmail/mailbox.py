"""What reading and sending from a Gmail mailbox share: its API, open for a ``with`` block."""

from __future__ import annotations

from typing import Self

from inboxes.models import Mailbox
from inboxes.providers.gmail.api import GmailApi
from inboxes.providers.gmail.signin import GoogleOAuthClient


class GmailMailbox:
    def __init__(self, mailbox: Mailbox) -> None:
        self.mailbox = mailbox
        self._api: GmailApi | None = None

    def __enter__(self) -> Self:
        self._api = GmailApi(self.mailbox, client=GoogleOAuthClient())
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._api is not None:
            self._api.close()
            self._api = None

    @property
    def api(self) -> GmailApi:
        assert self._api is not None, "use it as a context manager"
        return self._api
