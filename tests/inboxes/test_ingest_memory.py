"""A stored batch's rows are freed when the batch is done, not at the next full
garbage collection (Django's FieldFile and its row refer to each other)."""

from __future__ import annotations

import gc
from email.message import EmailMessage

import pytest
from django.db.models.fields.files import FieldFile

from inboxes.models import Attachment, Inbox, Mailbox, MailboxFolder, Message
from inboxes.providers.base import RawMessage
from inboxes.sync.ingest import ingest_batch, rows_release_files

pytestmark = pytest.mark.django_db


def _raw(index: int) -> bytes:
    message = EmailMessage()
    message["From"] = f"Customer {index} <c{index}@customer.example.com>"
    message["To"] = "support@acme.example.com"
    message["Subject"] = f"Order {index}"
    message["Message-ID"] = f"<order{index}@customer.example.com>"
    message.set_content("Where is my order? " * 50)
    message.add_attachment(
        b"%PDF-1.4 invoice", maintype="application", subtype="pdf", filename="i.pdf"
    )
    return message.as_bytes()


def _field_files() -> list[FieldFile]:
    # type(), not isinstance(): a dead weak proxy among the objects would raise.
    return [o for o in gc.get_objects() if issubclass(type(o), FieldFile)]


def test_a_stored_batch_leaves_no_row_in_a_cycle_with_its_file(account):
    mailbox = Mailbox.objects.create(
        account=account,
        kind="team",
        address="support@acme.example.com",
        canonical_address="support@acme.example.com",
    )
    Inbox.objects.create(account=account, name="Support", mailbox=mailbox)
    folder = MailboxFolder.objects.create(mailbox=mailbox, role="inbox", name="INBOX")
    raws = [RawMessage(key=str(i), raw=_raw(i)) for i in range(5)]
    gc.collect()
    before = len(_field_files())
    gc.disable()  # only reference counting frees what the batch made
    try:
        result = ingest_batch(mailbox=mailbox, folder=folder, raws=raws, cursor={}, backfill=True)
        left = len(_field_files()) - before
    finally:
        gc.enable()
    assert result.stored == 5
    assert left == 0
    # The rows and their files are all there.
    assert Message.objects.filter(account=account).exclude(raw="").count() == 5
    assert Attachment.objects.filter(message__account=account).count() == 5


def test_a_released_row_still_gives_its_file(account):
    message = Message(account=account, subject="x")
    message.raw.name = "raw/2026/12/07/x.eml"
    assert message.raw.instance is message  # the cycle Django makes
    rows_release_files([message])
    assert vars(message)["raw"] == "raw/2026/12/07/x.eml"
    assert message.raw.name == "raw/2026/12/07/x.eml"
    assert isinstance(message.raw, FieldFile)
