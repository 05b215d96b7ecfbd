"""The outbox's composer (inboxes/outbox/compose.py): standards-correct bytes, and the
message's row built without parsing them back, equal to what ``parse_message`` reads."""

from __future__ import annotations

import re
from email import message_from_bytes
from email.policy import default

import pytest
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inboxes.mime import parse_message
from inboxes.models import Direction, Mailbox, Message
from inboxes.outbox import Draft, Recipient, outbox_create, outbox_create_many
from inboxes.outbox.compose import compose
from inboxes.sync.ingest import message_row

LONG_URL = "https://www.example.com/a/very/long/path/" + "segment-" * 20 + "?utm=1&x=2"
TRACKED = (
    '<div style="font-family: Arial, Helvetica, sans-serif; font-size: 14px">'
    f'<p>Hi Zoë,</p><p>see <a href="{LONG_URL}">our offer</a> 🎉</p>'
    '<img src="https://crm.example.com/t/o/oAbCdEfGhIjKlMnOpQrStUv.sig" width="1" height="1" '
    'alt="" style="display: block; width: 1px; height: 1px; border: 0"></div>'
)

DRAFTS = {
    "plain ascii": {"subject": "Hello", "text": "Hi Pat,\n\nhow is it?\n"},
    "text and html": {"subject": "Offer", "text": "Hi\n", "html": "<p>Hi</p>"},
    "non-ascii names and subject": {
        "from_name": "Rïta Rép",
        "to": [Recipient("a@b.example.com", "Pät Müller"), Recipient("c@d.example.com", "Zoë")],
        "subject": "Grüße aus Köln – Angebot für Sie",
        "text": "Hallo Pät,\n\nwie geht's?\n",
        "html": "<p>Hallo Pät,</p><p>wie geht's?</p>",
    },
    "emoji and cjk": {
        "from_name": "山田 太郎",
        "to": [Recipient("x@y.example.com", "🎉 Party 🎉")],
        "subject": "🎉 お知らせ: 新製品のご案内 🎉 " * 3,
        "text": "日本語のテキスト。" * 40,
        "html": "<p>" + "日本語" * 100 + " 🎉</p>",
    },
    "long lines and links": {
        "subject": "A subject that goes on and on " * 6,
        "text": f"Read this: {LONG_URL}\n" + "word " * 100 + "\n",
        "html": TRACKED,
    },
    "long unbreakable subject": {"subject": "x" * 200, "text": "y" * 300},
    "crlf and lone cr": {"text": "one\r\ntwo\rthree\n\n\nfour\r\n", "html": "<p>a</p>\r\n<p>b</p>"},
    "specials in names": {
        "from_name": 'Pat "the man" O\'Brien, Jr. <x>',
        "to": [
            Recipient("q@r.example.com", "Smith, Ann"),
            Recipient("s@t.example.com", "back\\slash"),
            Recipient("u@v.example.com", "=?utf-8?q?not_encoded?="),
            Recipient("w@x.example.com"),
        ],
        "cc": [Recipient("cc@x.example.com", "Cc Person"), Recipient("cc2@x.example.com")],
        "subject": "=?utf-8?q?looks_encoded?= but  is\tnot",
    },
    "whitespace and control characters": {
        "from_name": "  Rita   Rep ",
        "subject": "  spaced   out\x01 ",
        "text": "trailing   \n\ttab\n=equals=\n.\nFrom here\n\x00nul\n",
        "html": "   ",
    },
    "html only": {
        "text": "",
        "html": "<h1>Only HTML</h1><p>and a <a href='https://e.example.com'>link</a>",
    },
    "nothing": {"subject": "", "text": ""},
    "threaded": {
        "subject": "Re: Offer",
        "in_reply_to": "<last@mail.example.com>",
        "references": [f"<ref{n}.{'x' * 30}@mail.example.com>" for n in range(25)]
        + ["<last@mail.example.com>", "not an id", "<bad id@x>", "<ü@x.example.com>"],
    },
    "idn domain": {"to": [Recipient("jo@bücher.example", "Jo")], "from_address": "me@fünf.example"},
    "automatic (Auto-Submitted)": {"subject": "You were assigned", "automatic": True},
    "many recipients": {
        "to": [
            Recipient(f"person{n}@company{n}.example.com", f"Person Nummer {n}") for n in range(30)
        ]
    },
}


def _compose(**draft) -> bytes:
    fields = {
        "from_address": "rep@acme.example.com",
        "from_name": "Rita Rep",
        "to": [Recipient("pat@customer.example.com", "Pat")],
        "cc": [],
        "subject": "Hello",
        "text": "Hi\n",
        **draft,
    }
    return compose(**fields)


def _row_fields(message: Message) -> dict:
    skipped = {"id", "raw", "created_at", "updated_at"}
    return {
        f.attname: getattr(message, f.attname)
        for f in Message._meta.concrete_fields
        if f.attname not in skipped
    }


@pytest.mark.parametrize("draft", DRAFTS.values(), ids=DRAFTS.keys())
def test_the_row_is_what_parse_message_reads_from_the_bytes(draft):
    composed = _compose(**draft)

    parsed = parse_message(composed.raw)

    assert composed.parsed == parsed
    assert parsed.error == ""
    assert parsed.message_id == composed.message_id
    account_id = "6a0c1c6e-9a49-4a57-9f1a-3f9d3c6f2d10"
    row = message_row(account_id=account_id, parsed=composed.parsed, raw_size=1, direction="out")
    again = message_row(account_id=account_id, parsed=parsed, raw_size=1, direction="out")
    assert _row_fields(row) == _row_fields(again)


_HEADER_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"))
_BODY_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=600)
_HTML = st.one_of(
    st.just(""),
    _BODY_TEXT,
    st.lists(
        st.sampled_from(["<p>", "</p>", "<a href='https://x.example.com/p?q=1'>", "</a>", "<br>"])
        | _HEADER_TEXT,
        max_size=12,
    ).map("".join),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    from_name=_HEADER_TEXT,
    name=_HEADER_TEXT,
    subject=_HEADER_TEXT,
    text=_BODY_TEXT,
    html=_HTML,
    in_reply_to=st.sampled_from(["", "<a@b.example.com>"]),
)
def test_any_draft_composes_to_what_parse_message_reads(
    from_name, name, subject, text, html, in_reply_to
):
    composed = _compose(
        from_name=from_name,
        to=[Recipient("pat@customer.example.com", name)],
        subject=subject,
        text=text,
        html=html,
        in_reply_to=in_reply_to,
        references=[in_reply_to],
    )

    assert composed.parsed == parse_message(composed.raw)
    _assert_well_formed(composed.raw)


def _assert_well_formed(raw: bytes) -> None:
    header_block, _, body = raw.partition(b"\r\n\r\n")
    assert raw.isascii()
    assert not re.search(rb"\r(?!\n)|(?<!\r)\n", raw), "every line ends in CRLF"
    for line in header_block.split(b"\r\n"):
        # Only an unbreakable address may make a line longer (up to RFC 5322's 998).
        assert len(line) <= 76 or (b"@" in line and len(line) <= 998), line
        assert line.strip(), "no whitespace-only continuation lines"
    assert all(len(line) <= 78 for line in body.split(b"\r\n"))


@pytest.mark.parametrize("draft", DRAFTS.values(), ids=DRAFTS.keys())
def test_another_reader_reads_what_was_written(draft):
    """The stdlib's own (policy default) parser as an independent reader."""
    composed = _compose(**draft)
    _assert_well_formed(composed.raw)

    message = message_from_bytes(composed.raw, policy=default)

    assert str(message["Subject"]) == draft.get("subject", "Hello")
    assert message["From"].addresses[0].display_name == draft.get("from_name", "Rita Rep")
    recipients = draft.get("to", [Recipient("pat@customer.example.com", "Pat")])
    assert [a.display_name for a in message["To"].addresses] == [r.name for r in recipients]
    text = draft.get("text", "Hi\n").replace("\r\n", "\n").replace("\r", "\n")
    plain = message.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert plain == text + ("" if text.endswith("\n") else "\n")
    if draft.get("html"):
        html = draft["html"].replace("\r\n", "\n")
        assert message.get_content_type() == "multipart/alternative"
        markup = message.get_body(("html",)).get_content().replace("\r\n", "\n")
        assert markup.rstrip("\n") == html.rstrip("\n")
    for part in message.walk():
        assert part.get("Content-Transfer-Encoding", "7bit") in (
            "7bit",
            "quoted-printable",
            "base64",
        )


@pytest.mark.parametrize(
    "draft",
    [
        {"subject": "Hello\r\nBcc: everyone@example.com"},
        {"from_name": "Rita\nRep"},
        {"to": [Recipient("pat@customer.example.com", "Pat\r")]},
        {"to": [Recipient("pat@customer.example.com\nBcc: x@y.example.com")]},
        {"to": [Recipient("jösé@customer.example.com")]},
        {"to": [Recipient("pat@customer.example.com>, <x@y.example.com")]},
        {"to": [Recipient("no-at-sign")]},
    ],
)
def test_line_breaks_in_header_values_and_unsendable_addresses_are_refused(draft):
    with pytest.raises(ValueError):
        _compose(**draft)


@pytest.mark.django_db(transaction=True)
def test_queued_rows_are_what_parse_message_reads_from_their_stored_files(account, admin):
    address = "ann@acme.example.com"
    mailbox = Mailbox.objects.create(
        account=account, kind="personal", owner=admin, address=address, canonical_address=address
    )
    chosen = ["non-ascii names and subject", "emoji and cjk", "long lines and links", "threaded"]
    drafts = [
        Draft(
            to=DRAFTS[name].get("to", [Recipient("pat@customer.example.com", "Pat")]),
            subject=DRAFTS[name].get("subject", "Hello"),
            text=DRAFTS[name].get("text", "Hi\n"),
            html=DRAFTS[name].get("html", ""),
            in_reply_to=DRAFTS[name].get("in_reply_to", ""),
            references=DRAFTS[name].get("references"),
        )
        for name in chosen
    ]
    with transaction.atomic():
        items = outbox_create_many(mailbox=mailbox, from_name="Rïta Rép", drafts=drafts)
        items.append(
            outbox_create(
                mailbox=mailbox,
                from_name="Rïta Rép",
                to=[Recipient("pat@customer.example.com", "Pät")],
                cc=[Recipient("cc@customer.example.com", "Çé")],
                subject="Grüße",
                text="Hallo\n",
                html=TRACKED,
            )
        )

    for item in items:
        stored = Message.objects.get(pk=item.message_id)
        with stored.raw.open("rb") as file:
            raw = file.read()
        expected = message_row(
            account_id=account.pk,
            parsed=parse_message(raw),
            raw_size=len(raw),
            direction=Direction.OUTBOUND,
        )
        assert _row_fields(stored) == _row_fields(expected)
