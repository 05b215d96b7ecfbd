"""Machine mail told apart from people's: bounces of eight MTA styles, out-of-office
answers, and the people who only look like machines (inboxes/mime/machine.py)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from inboxes.mime import parse_message
from inboxes.mime.bounce_text import plain_words

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "machine"


def parse(name: str):
    return parse_message((FIXTURES / f"{name}.eml").read_bytes())


@pytest.mark.parametrize(
    ("name", "status", "diagnostic"),
    [
        ("postfix_dsn", "5.1.1", "mailbox does not exist"),
        ("exim_text", "5.1.1", "mailbox does not exist"),
        ("qmail_text", "5.0.0", "mailbox does not exist"),
        ("exchange_ndr", "5.1.10", "mailbox does not exist"),
        ("gmail_dsn", "5.1.1", "mailbox does not exist"),
        ("sendmail_dsn", "5.2.1", "mailbox disabled"),
        ("ses_dsn", "5.2.2", "mailbox full"),
    ],
)
def test_a_bounce_of_each_mta_style_names_the_failed_recipient_and_the_original(
    name, status, diagnostic
):
    parsed = parse(name)

    assert parsed.kind == "bounce"
    assert parsed.bounce["original_message_id"] == "<reply.1@support.example.com>"
    (recipient,) = parsed.bounce["recipients"]
    assert recipient["address"] == "ann@x.example"
    assert recipient["action"] == "failed"
    assert recipient["status"] == status
    assert recipient["diagnostic"] == diagnostic


def test_a_dsn_with_only_the_original_headers_is_tied_by_its_text_rfc822_headers_part():
    parsed = parse("headers_only_dsn")

    assert parsed.kind == "bounce"
    assert parsed.bounce["original_message_id"] == "<reply.2@support.example.com>"
    (recipient,) = parsed.bounce["recipients"]
    assert recipient == {
        "address": "bo@y.example",
        "action": "delayed",
        "status": "4.4.1",
        "diagnostic": "no answer from the recipient's server (a temporary failure)",
        "server_text": "connect to mx.y.example[198.51.100.20]:25: Connection timed out",
    }


def test_a_plain_text_postfix_bounce_reads_every_recipient_and_the_quoted_message_id():
    parsed = parse("postfix_text")

    assert parsed.kind == "bounce"
    assert parsed.bounce["original_message_id"] == "<reply.3@support.example.com>"
    assert [(r["address"], r["status"], r["diagnostic"]) for r in parsed.bounce["recipients"]] == [
        ("ann@x.example", "5.2.2", "mailbox full"),
        ("cy@z.example", "5.0.0", "the recipient's domain does not exist"),
    ]


def test_gmails_x_failed_recipients_alone_makes_a_bounce_tied_by_in_reply_to():
    raw = (
        b"From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>\r\n"
        b"To: support@support.example.com\r\n"
        b"Subject: Delivery Status Notification (Failure)\r\n"
        b"X-Failed-Recipients: ann@x.example\r\n"
        b"In-Reply-To: <reply.1@support.example.com>\r\n"
        b"Message-ID: <gmr.1@mx.google.com>\r\n"
        b"\r\n"
        b"Your message wasn't delivered. 550 5.1.1 The account does not exist.\r\n"
    )
    parsed = parse_message(raw)

    assert parsed.kind == "bounce"
    assert parsed.bounce["original_message_id"] == "<reply.1@support.example.com>"
    assert parsed.bounce["recipients"][0]["address"] == "ann@x.example"
    assert parsed.bounce["recipients"][0]["status"] == "5.1.1"


@pytest.mark.parametrize("name", ["exchange_oof", "gmail_vacation", "rfc3834_responder"])
def test_out_of_office_answers_are_auto_replies(name):
    parsed = parse(name)

    assert parsed.kind == "auto_reply"
    assert parsed.bounce is None


def test_exchanges_out_of_office_shape_is_enough_without_any_rfc_3834_header():
    raw = (
        b"From: Ann <ann@x.example>\r\nTo: support@support.example.com\r\n"
        b"Subject: Automatisch antwoord: Re: My order\r\nThread-Topic: My order\r\n"
        b"X-MS-Exchange-Inbox-Rules-Loop: ann@x.example\r\nMessage-ID: <oof.2@x.example>\r\n"
        b"\r\nIk ben afwezig.\r\n"
    )

    assert parse_message(raw).kind == "auto_reply"


@pytest.mark.parametrize(
    "header",
    [
        b"Auto-Submitted: auto-generated",
        b"X-Autoreply: yes",
        b"X-Autorespond: Thanks",
        b"Precedence: auto_reply",
        b"Precedence: junk",
        b"Precedence: bulk",
        b"X-Auto-Response-Suppress: All",
    ],
)
def test_each_auto_reply_header_marks_an_auto_reply(header):
    raw = b"From: a@x.example\r\nSubject: Hi\r\n" + header + b"\r\n\r\nAway.\r\n"

    assert parse_message(raw).kind == "auto_reply"


def test_a_person_who_only_looks_like_a_machine_writes_an_email():
    # A postmaster asking about automatic replies, with Auto-Submitted: no.
    assert parse("person_not_machine").kind == "email"
    # "Automatic reply:" typed by a person, without Exchange's markers.
    raw = b"From: a@x.example\r\nSubject: Automatic reply: what is that?\r\n\r\nHi\r\n"
    assert parse_message(raw).kind == "email"
    assert parse_message(b"From: a@x.example\r\nPrecedence: list\r\n\r\nHi\r\n").kind == "email"


def test_a_bounce_is_never_an_auto_reply_even_with_auto_submitted():
    parsed = parse("postfix_dsn")

    assert parsed.headers["auto-submitted"] == "auto-replied"
    assert parsed.kind == "bounce"


def test_status_codes_are_said_in_plain_words():
    assert plain_words("5.1.1") == "mailbox does not exist"
    assert plain_words("5.2.2") == "mailbox full"
    assert plain_words("4.2.2") == "mailbox full (a temporary failure)"
    assert plain_words("5.7.26") == "refused: the message failed authentication (DMARC)"
    assert plain_words("5.0.0", "550 No such user here") == "mailbox does not exist"
    assert plain_words("5.9.99") == "the receiving server refused it"


def test_a_huge_hostile_report_is_read_quickly_and_bounded():
    lines = b"".join(b"<user%d@x.example>: 550 5.1.1 unknown\r\n" % n for n in range(50_000))
    raw = (
        b"From: MAILER-DAEMON@mx.example\r\nSubject: failure notice\r\n\r\n"
        + lines
        + b"x" * 2_000_000
        + b"\r\n"
    )
    started = time.perf_counter()

    parsed = parse_message(raw)

    assert time.perf_counter() - started < 5
    assert parsed.kind == "bounce"
    assert len(parsed.bounce["recipients"]) == 100
