"""Gmail's batch answers split by hand (inboxes/providers/gmail/batch.py) and the
fetch that streams them in byte-bounded batches (api.py ``fetch_raw``).

The splitter is fed bytes as a socket would give them; the fetch runs against the
fake Google (tests/support/fakes/google.py) through a real sync."""

from __future__ import annotations

import base64
import json

import pytest

from inboxes.models import MailboxMessage, Message
from inboxes.providers.base import ProviderError
from inboxes.providers.gmail import api as gmail_api
from inboxes.providers.gmail import session as gmail_session
from inboxes.providers.gmail.batch import (
    BatchFormatError,
    BatchSplitter,
    batch_body,
    boundary_of,
    raw_message,
)
from inboxes.sync import mailbox_sync
from tests.inboxes.test_gmail import deliver, support, waits  # noqa: F401 - fixtures

pytest_plugins = ["tests.support.fakes.google"]


def message_json(raw: bytes, internal: int = 1_700_000_000_000) -> bytes:
    encoded = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    return json.dumps({"id": "x", "internalDate": str(internal), "raw": encoded}).encode()


def answer(boundary: bytes, parts: list[tuple[str, int, bytes, str]], newline: bytes) -> bytes:
    """A batch answer as Google writes it; parts are (content id, status, body, extra header)."""
    out = [b"this preamble is ignored", newline]
    for content_id, status, body, extra in parts:
        out += [b"--", boundary, b"  ", newline]  # transport padding after the delimiter
        out += [b"Content-Type: application/http", newline]
        out += [b"Content-ID: <response-", content_id.encode(), b">", newline, newline]
        out += [b"HTTP/1.1 ", str(status).encode(), b" Whatever", newline]
        out += [b"Content-Type: application/json; charset=UTF-8", newline]
        if extra:
            out += [extra.encode(), newline]
        out += [newline, body, newline]
    out += [b"--", boundary, b"--", newline, b"an epilogue, ignored too", newline]
    return b"".join(out)


def split(data: bytes, boundary: bytes, step: int) -> list:
    splitter = BatchSplitter(boundary)
    parts = []
    for start in range(0, len(data), step):
        parts += splitter.feed(data[start : start + step])
    splitter.close()
    return parts


# --- the splitter ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "boundary"),
    [
        ('multipart/mixed; boundary="batch_=_a b;c"', b"batch_=_a b;c"),
        ("multipart/mixed; boundary=batch_plain", b"batch_plain"),
        ('Multipart/Mixed;charset=x; BOUNDARY = "q\\"uoted"', b'q"uoted'),
    ],
)
def test_the_boundary_is_read_quoted_or_not(content_type, boundary):
    assert boundary_of(content_type) == boundary


def test_an_answer_that_is_not_multipart_is_refused():
    with pytest.raises(BatchFormatError, match="not multipart"):
        boundary_of("application/json; charset=UTF-8")
    with pytest.raises(BatchFormatError, match="no boundary"):
        boundary_of("multipart/mixed")


@pytest.mark.parametrize("newline", [b"\r\n", b"\n"], ids=["crlf", "lf"])
@pytest.mark.parametrize("step", [1, 13, 4096, 10**9])
def test_parts_come_out_whole_with_crlf_or_lf_in_any_chunking(newline, step):
    boundary = b"batch_=_x;y"
    # Bodies that hold the boundary, but never as a line of its own.
    first = b"From: a\r\n\r\nsays --batch_=_x;y inline\r\n--batch_=_x;yz longer\r\n"
    parts = [
        ("a1", 200, message_json(first), ""),
        ("a2", 404, b'{"error": {"code": 404, "message": "Requested entity was not found."}}', ""),
        ("a3", 429, b'{"error": {"code": 429, "message": "Slow down"}}', "Retry-After: 7"),
        ("a4", 500, b'{"error": {"code": 500, "message": "Backend Error"}}', ""),
        ("a5", 200, message_json(b"x" * 70_000), ""),
    ]

    got = split(answer(boundary, parts, newline), boundary, step)

    assert [(p.content_id, p.status) for p in got] == [
        ("a1", 200),
        ("a2", 404),
        ("a3", 429),
        ("a4", 500),
        ("a5", 200),
    ]
    assert raw_message(got[0].body) == (first, 1_700_000_000_000)
    assert raw_message(got[4].body) == (b"x" * 70_000, 1_700_000_000_000)
    assert got[2].headers["retry-after"] == "7"
    assert json.loads(got[1].body)["error"]["code"] == 404


def test_a_truncated_answer_gives_the_whole_parts_and_then_an_error():
    boundary = b"b0"
    data = answer(
        boundary, [(str(i), 200, message_json(b"m%d" % i), "") for i in range(3)], b"\r\n"
    )
    cut = data.index(b"--b0", data.index(b"response-2")) - 40  # inside the third part
    splitter = BatchSplitter(boundary)

    whole = splitter.feed(data[:cut])

    assert [p.content_id for p in whole] == ["0", "1"]
    with pytest.raises(BatchFormatError, match="ended early, after 2 complete parts"):
        splitter.close()


def test_a_huge_part_is_kept_once_and_cut_off_when_it_ends():
    boundary = b"batch_huge"
    huge = bytes(range(256)) * (24 * 1024 * 4)  # 24 MiB of every byte value
    data = answer(
        boundary,
        [("big", 200, message_json(huge), ""), ("small", 200, message_json(b"tiny"), "")],
        b"\r\n",
    )
    splitter = BatchSplitter(boundary)
    step = 256 * 1024
    parts, most_buffered = [], 0
    for start in range(0, len(data), step):
        parts += splitter.feed(data[start : start + step])
        most_buffered = max(most_buffered, len(splitter._buffer))
    splitter.close()

    assert [raw_message(p.body)[0] for p in parts] == [huge, b"tiny"]
    # Never more than the part being read plus one chunk; no copy of the answer.
    assert most_buffered <= len(message_json(huge)) + step


def test_the_request_body_is_split_back_by_the_fakes_own_parser():
    from tests.support.fakes.google import _split_multipart

    body = batch_body("bnd", [("id1", "/gmail/v1/users/me/messages/id1?format=raw")])

    [(head, content)] = _split_multipart('multipart/mixed; boundary="bnd"', body)
    assert b"Content-ID: <id1>" in head
    assert content.startswith(b"GET /gmail/v1/users/me/messages/id1?format=raw HTTP/1.1")


# --- the fetch against the fake Google ------------------------------------------------------


def stored_keys() -> list[str]:
    return sorted(MailboxMessage.objects.values_list("provider_key", flat=True))


@pytest.mark.django_db
def test_part_errors_are_mapped_as_before(support, fake_google, waits):  # noqa: F811
    inbox, mailbox = support
    ids = deliver(fake_google, 5)
    fake_google.fail_next(404, f"/messages/{ids[0]}")  # deleted before it was fetched
    fake_google.fail_next(429, f"/messages/{ids[1]}", retry_after=3)
    fake_google.fail_next(500, f"/messages/{ids[2]}")

    assert mailbox_sync(mailbox.pk).imported == 4

    assert stored_keys() == sorted(ids[1:])
    assert waits[0] == 3.0  # the part's Retry-After
    assert len(waits) == 1  # both retried parts went again together


@pytest.mark.django_db
def test_a_part_refused_for_good_fails_the_sync_permanently(support, fake_google):  # noqa: F811
    inbox, mailbox = support
    ids = deliver(fake_google, 2)
    fake_google.fail_next(400, f"/messages/{ids[1]}", reason="invalidArgument")

    with pytest.raises(ProviderError, match="400") as failure:
        mailbox_sync(mailbox.pk)

    assert failure.value.permanent


@pytest.mark.django_db
def test_a_broken_off_answer_is_asked_for_again_and_nothing_is_lost(support, fake_google, waits):  # noqa: F811
    inbox, mailbox = support
    ids = deliver(fake_google, 6)
    fake_google.batch_cuts = [200]  # the first answer breaks off inside its first part

    assert mailbox_sync(mailbox.pk).imported == 6

    assert stored_keys() == sorted(ids)
    assert len(waits) == 1


@pytest.mark.django_db
def test_an_answer_that_keeps_breaking_off_fails_clearly_and_the_next_sync_catches_up(
    support,  # noqa: F811
    fake_google,
    waits,  # noqa: F811
    monkeypatch,
):
    inbox, mailbox = support
    monkeypatch.setattr(gmail_session, "FETCH_BATCH_SIZE", 2)
    ids = deliver(fake_google, 6)
    # The first answer whole, then every one broken off: more than NETWORK_RETRIES.
    fake_google.batch_cuts = [10**9] + [200] * 10

    with pytest.raises(ProviderError, match="broke off after 0") as failure:
        mailbox_sync(mailbox.pk)

    assert not failure.value.permanent
    assert len(waits) == gmail_api.NETWORK_RETRIES
    kept = MailboxMessage.objects.count()  # the sync stores whole ingest batches only
    fake_google.batch_cuts = []
    assert mailbox_sync(mailbox.pk).imported == 6 - kept
    assert stored_keys() == sorted(ids)
    assert Message.objects.count() == 6  # none twice


@pytest.mark.django_db
def test_huge_messages_are_not_asked_for_in_one_batch(support, fake_google, monkeypatch):  # noqa: F811
    inbox, mailbox = support
    monkeypatch.setattr(gmail_session, "FETCH_BATCH_BYTES", 250_000)
    asked: list[list[str]] = []
    send = gmail_api._BatchFetch._send
    monkeypatch.setattr(
        gmail_api._BatchFetch, "_send", lambda self, ids: (asked.append(ids), send(self, ids))
    )
    ids = deliver(fake_google, 12, body="word " * 20_000)  # about 100 KB each

    assert mailbox_sync(mailbox.pk).imported == 12

    assert stored_keys() == sorted(ids)
    # The first batch goes by a guess (Gmail's lists give no sizes); once its answer
    # told what these messages weigh, at most two of them (200 KB) go at a time.
    assert len(asked[0]) == 250_000 // gmail_api.FETCH_SIZE_GUESS
    assert asked[1:] and all(len(batch) <= 2 for batch in asked[1:])
    assert sum(len(batch) for batch in asked) == 12


@pytest.mark.parametrize(
    "template",
    [
        '{"id": "1", "raw": "%s", "internalDate": "1700000000000"}',
        '{"internalDate":"1700000000000","raw" :\n "%s"}',
        # The key's name inside a string value, escaped as JSON must: not the key.
        '{"snippet": "say \\"raw\\": \\"AAAA\\"", "raw": "%s", "internalDate": "1700000000000"}',
        '{"snippet": "\\"raw", "raw": "%s", "internalDate": "1700000000000"}',
    ],
)
def test_the_raw_value_is_decoded_wherever_it_stands(template):
    message = bytes(range(256)) * 40 + b"\xfb\xff"  # - and _ in its base64url
    encoded = base64.urlsafe_b64encode(message).decode()

    for text in (encoded, encoded.rstrip("="), encoded.replace("_", "\\u005f")):
        assert raw_message((template % text).encode()) == (message, 1_700_000_000_000)


def test_an_answer_without_raw_gives_nothing():
    assert raw_message(b'{"id": "1", "snippet": "\\"raw\\"", "internalDate": "5"}') is None


@pytest.mark.django_db
def test_a_part_refused_for_its_token_renews_once_and_is_fetched_again(support, fake_google, waits):  # noqa: F811
    inbox, mailbox = support
    ids = deliver(fake_google, 3)
    fake_google.fail_next(401, f"/messages/{ids[1]}", reason="authError")

    assert mailbox_sync(mailbox.pk).imported == 3

    assert stored_keys() == sorted(ids)
    assert len(fake_google.calls_to("POST /token")) == 1
    assert waits == []  # no backoff: a new token, at once


@pytest.mark.django_db
def test_parts_refused_for_a_renewed_token_again_need_a_new_sign_in(support, fake_google):  # noqa: F811
    inbox, mailbox = support
    ids = deliver(fake_google, 2)
    fake_google.fail_next(401, f"/messages/{ids[0]}", times=2, reason="authError")

    with pytest.raises(ProviderError) as failure:
        mailbox_sync(mailbox.pk)

    assert failure.value.reauth
    assert len(fake_google.calls_to("POST /token")) == 1
