"""The outbox's composer with attachments and calendar invitations: readable by an
independent reader (the stdlib's parser), and queued with their attachment rows."""

from __future__ import annotations

from email import message_from_bytes
from email.policy import default

import pytest
from django.db import transaction

from inboxes.models import Mailbox, Message
from inboxes.outbox import Attachment, CalendarPart, Recipient, outbox_create
from inboxes.outbox.compose import compose

ICS = (
    "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Postkamer//Meetings//EN\r\n"
    "METHOD:REQUEST\r\nBEGIN:VEVENT\r\nUID:booking-1@postkamer\r\nSEQUENCE:0\r\n"
    "DTSTART:20261208T090000Z\r\nDTEND:20261208T093000Z\r\nSUMMARY:Intro call – Zoë\r\n"
    "END:VEVENT\r\nEND:VCALENDAR\r\n"
)
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 40


def _compose(**extra):
    return compose(
        from_address="rep@acme.example.com",
        from_name="Rita Rep",
        to=[Recipient("pat@customer.example.com", "Pat")],
        cc=[],
        subject="Your quote",
        text="Hi Pat,\n\nattached.\n",
        html="<p>Hi Pat,</p><p>attached.</p>",
        **extra,
    )


def _lines_fit(raw: bytes) -> None:
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    assert b"\n" not in raw.replace(b"\r\n", b"")


def test_attachments_go_out_whole_with_their_names():
    names = ["quote.pdf", "Angebot für Zoë – 2026 (final).pdf", "報告書" * 40 + ".pdf"]
    composed = _compose(
        attachments=[Attachment(name, "application/pdf", PDF) for name in names]
        + [Attachment("notes.txt", "not a type", b"plain\n")]
    )
    _lines_fit(composed.raw)
    message = message_from_bytes(composed.raw, policy=default)
    assert message.get_content_type() == "multipart/mixed"
    assert message.get_body(("plain",)).get_content().startswith("Hi Pat,")
    files = list(message.iter_attachments())
    assert [part.get_filename() for part in files] == [*names, "notes.txt"]
    assert [part.get_content() for part in files[:3]] == [PDF] * 3
    assert files[3].get_content_type() == "application/octet-stream"
    # The row (read back by parse_message) knows the files too.
    parsed = [(a.filename, a.content_type, a.payload) for a in composed.parsed.attachments]
    assert parsed[0] == ("quote.pdf", "application/pdf", PDF)
    assert [name for name, _, _ in parsed] == [*names, "notes.txt"]
    assert composed.parsed.message_id == composed.message_id
    assert composed.parsed.text.startswith("Hi Pat,")


def test_an_invitation_is_an_alternative_and_an_ics_file():
    composed = _compose(calendar=CalendarPart(ICS, "request"))
    _lines_fit(composed.raw)
    message = message_from_bytes(composed.raw, policy=default)
    alternative = next(p for p in message.walk() if p.get_content_type() == "multipart/alternative")
    kinds = [p.get_content_type() for p in alternative.iter_parts()]
    assert kinds == ["text/plain", "text/html", "text/calendar"]
    calendar = list(alternative.iter_parts())[2]
    assert calendar.get_param("method") == "REQUEST"
    assert calendar.get_content().replace("\r\n", "\n") == ICS.replace("\r\n", "\n")
    (ics_file,) = message.iter_attachments()
    assert ics_file.get_filename() == "invite.ics"
    assert ics_file.get_content_type() == "application/ics"


@pytest.mark.parametrize(
    "extra",
    [
        {"calendar": CalendarPart(ICS, "PUBLISH\r\nBcc: x@y.example.com")},
        {"attachments": [Attachment("evil\r\nBcc: x@y.example.com", "text/plain", b"x")]},
    ],
)
def test_header_injection_through_parts_is_refused(extra):
    with pytest.raises(ValueError):
        _compose(**extra)


@pytest.mark.django_db(transaction=True)
def test_queued_attachments_are_stored_with_the_message_and_bcc_only_in_the_envelope(
    account, admin
):
    address = "ann@acme.example.com"
    mailbox = Mailbox.objects.create(
        account=account, kind="personal", owner=admin, address=address, canonical_address=address
    )
    with transaction.atomic():
        item = outbox_create(
            mailbox=mailbox,
            from_name="Ann",
            to=[Recipient("pat@customer.example.com", "Pat")],
            bcc=[Recipient("boss@acme.example.com")],
            subject="Quote",
            text="Attached.\n",
            attachments=[Attachment("quote.pdf", "application/pdf", PDF)],
        )
    assert item.recipients == ["pat@customer.example.com", "boss@acme.example.com"]
    message = Message.objects.get(pk=item.message_id)
    (attachment,) = message.attachments.all()
    assert (attachment.filename, attachment.content_type, attachment.size) == (
        "quote.pdf",
        "application/pdf",
        len(PDF),
    )
    with attachment.file.open("rb") as file:
        assert file.read() == PDF
    with message.raw.open("rb") as file:
        raw = file.read()
    assert b"boss@acme.example.com" not in raw


def test_the_bcc_field_for_the_send_apis_names_only_the_hidden_recipients():
    from inboxes.providers.base import with_bcc_header

    raw = _compose().raw
    assert with_bcc_header(raw, ["pat@customer.example.com"]) == raw
    added = with_bcc_header(raw, ["PAT@customer.example.com", "a@x.example.com", "b@x.example.com"])
    message = message_from_bytes(added, policy=default)
    assert [a.addr_spec for a in message["Bcc"].addresses] == ["a@x.example.com", "b@x.example.com"]
    assert added.endswith(raw)
