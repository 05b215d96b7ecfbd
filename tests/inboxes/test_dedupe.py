"""The dedupe key (inboxes/mime/dedupe.py): distinct messages never merge, copies of
one message delivered to two of the account's addresses stay one, and the v1 keys
stored before keep matching."""

from __future__ import annotations

import pytest

from conversations.models import Conversation
from inboxes.mime import parse_message
from inboxes.models import Inbox, Mailbox, MailboxFolder, MailboxMessage, Message, Tombstone
from inboxes.providers.base import RawMessage
from inboxes.sync.ingest import ingest_batch
from tests.support.mail import make_email

SENT = (
    b"From: Carol <carol@customer.example.com>\r\n"
    b"To: sales@acme.example.com, support@acme.example.com\r\n"
    b"Subject: Widgets\r\n"
    b"Date: Tue, 05 Mar 2024 10:15:00 +0100\r\n"
    b"Message-ID: <w1@customer.example.com>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"Do you ship widgets?\r\n"
)


def delivered(to: str, mx: str, raw: bytes = SENT) -> bytes:
    """``raw`` as the receiving side stores it for ``to``: its own trace headers on top."""
    trace = (
        f"Return-Path: <carol@customer.example.com>\r\n"
        f"Delivered-To: {to}\r\n"
        f"X-Original-To: {to}\r\n"
        f"Received: from mail.customer.example.com (mail.customer.example.com [192.0.2.7])\r\n"
        f"\tby {mx}.acme.example.com with ESMTPS id {mx}77; Tue, 05 Mar 2024 10:15:03 +0100\r\n"
        f"Authentication-Results: {mx}.acme.example.com; spf=pass; dkim=pass\r\n"
        f"ARC-Seal: i=1; a=rsa-sha256; t=17096301{len(mx)}; cv=none; d={mx}.example\r\n"
        f"ARC-Authentication-Results: i=1; {mx}.acme.example.com; spf=pass\r\n"
        f"DKIM-Signature: v=1; a=rsa-sha256; d={mx}.example; s=fwd; bh=x; b={mx}\r\n"
        f"X-Spam-Score: {len(to) / 10}\r\n"
        f"X-Gmail-Labels: Inbox,{mx}\r\n"
        f"X-MS-Exchange-Organization-SCL: {len(mx)}\r\n"
    ).encode()
    return trace + raw


def key(raw: bytes) -> str:
    return parse_message(raw).dedupe_key


# --- The key ---------------------------------------------------------------------------


def test_copies_differing_only_in_trace_headers_have_one_key():
    assert key(delivered("sales@acme.example.com", "mx1")) == key(
        delivered("support@acme.example.com", "mx2")
    )
    # Refolded by a relay, or with other line endings, it is still the same email.
    refolded = SENT.replace(b"Subject: Widgets", b"Subject:\r\n Widgets")
    assert key(refolded) == key(SENT) == key(SENT.replace(b"\r\n", b"\n"))


@pytest.mark.parametrize(
    "pair",
    [
        (b"Just a line of text.\n", b"Another line of text.\n"),
        (b"first paragraph\n\nthe same\n", b"other paragraph\n\nthe same\n"),
        (b"no blank line at all", b"no blank line at all, different"),
    ],
    ids=["one-line", "two-paragraphs", "no-blank-line"],
)
def test_header_less_messages_with_different_bytes_stay_two(pair):
    first, second = (parse_message(raw) for raw in pair)

    assert first.legacy_dedupe_key == second.legacy_dedupe_key  # what merged them
    assert first.dedupe_key != second.dedupe_key


@pytest.mark.parametrize(
    "pair",
    [
        (b"X-Mailer: scanner 1\n\n", b"X-Mailer: scanner 2\n\n"),
        (b"Content-Type: text/plain\n", b"Content-Type: text/html\n"),
        (b"Keywords: a\n\n\n", b"Comments: a\n\n\n"),
    ],
)
def test_headers_with_an_empty_body_stay_two(pair):
    first, second = (parse_message(raw) for raw in pair)

    assert first.legacy_dedupe_key == second.legacy_dedupe_key  # what merged them
    assert first.dedupe_key != second.dedupe_key


@pytest.mark.parametrize(
    "change",
    [
        (b"Content-Type: text/plain; charset=utf-8", b"Content-Type: text/html; charset=utf-8"),
        (b"charset=utf-8", b"charset=iso-8859-1"),
        (b"Content-Transfer-Encoding: 8bit", b"Content-Transfer-Encoding: quoted-printable"),
        (b"MIME-Version: 1.0\r\n", b""),
        (b"MIME-Version: 1.0\r\n", b"MIME-Version: 1.0\r\nX-Priority: 1\r\n"),
    ],
)
def test_messages_differing_only_in_a_sender_header_stay_two(change):
    changed = parse_message(SENT.replace(*change))
    original = parse_message(SENT)

    assert changed.legacy_dedupe_key == original.legacy_dedupe_key  # what merged them
    assert changed.dedupe_key != original.dedupe_key


def test_keys_are_versioned_and_the_v1_key_is_kept_alongside():
    parsed = parse_message(SENT)

    assert parsed.dedupe_key.startswith("v2") and len(parsed.dedupe_key) == 64
    assert len(parsed.legacy_dedupe_key) == 64 and int(parsed.legacy_dedupe_key, 16) >= 0
    assert parsed.dedupe_keys == (parsed.dedupe_key, parsed.legacy_dedupe_key)
    assert parse_message(b"").dedupe_key.startswith("v2")  # the fallback too


# --- Through ingest ------------------------------------------------------------------------

pytestmark_db = pytest.mark.django_db


@pytest.fixture
def two_inboxes(account):
    """Sales and Support: two team mailboxes of one account, each with its inbox."""
    folders = []
    for name in ("sales", "support"):
        address = f"{name}@acme.example.com"
        mailbox = Mailbox.objects.create(
            account=account, kind="team", address=address, canonical_address=address
        )
        Inbox.objects.create(account=account, name=name.title(), mailbox=mailbox)
        folders.append(MailboxFolder.objects.create(mailbox=mailbox, role="inbox", name="INBOX"))
    return folders


def ingest(folder: MailboxFolder, *raws: bytes, prefix: str = "k") -> None:
    ingest_batch(
        mailbox=folder.mailbox,
        folder=folder,
        raws=[RawMessage(key=f"{prefix}{n}", raw=raw) for n, raw in enumerate(raws)],
        cursor={},
        backfill=False,
    )


@pytestmark_db
def test_a_message_to_two_inboxes_of_the_account_is_stored_once(two_inboxes):
    sales, support = two_inboxes
    ingest(sales, delivered("sales@acme.example.com", "mx1"))
    ingest(support, delivered("support@acme.example.com", "mx2"))

    message = Message.objects.get()
    assert message.dedupe_key.startswith("v2")
    links = MailboxMessage.objects.order_by("folder__mailbox__address")
    assert [link.message_id for link in links] == [message.pk, message.pk]
    assert Conversation.objects.filter(messages=message).count() == 2


@pytestmark_db
def test_messages_that_used_to_merge_are_stored_apart(two_inboxes):
    sales, _ = two_inboxes
    pairs = [
        b"X-Mailer: scanner 1\n\n",
        b"X-Mailer: scanner 2\n\n",
        b"Just a line of text.\n",
        b"Another line of text.\n",
        SENT,
        SENT.replace(b"text/plain", b"text/html"),
    ]
    ingest(sales, *pairs)

    assert Message.objects.count() == len(pairs)


@pytestmark_db
def test_a_row_stored_under_a_v1_key_keeps_matching_and_nothing_is_stored_twice(two_inboxes):
    sales, support = two_inboxes
    raw = make_email(subject="Stored before v2", to="sales@acme.example.com")
    ingest(sales, raw)
    parsed = parse_message(raw)
    # As the row and ledger were written before v2 keys.
    Message.objects.update(dedupe_key=parsed.legacy_dedupe_key)
    MailboxMessage.objects.update(dedupe_key=parsed.legacy_dedupe_key)
    [before] = Message.objects.all()

    ingest(sales, raw, prefix="resync-")  # e.g. a new UIDVALIDITY: every key is new
    ingest(support, raw)

    assert list(Message.objects.all()) == [before]
    assert before.dedupe_key == parsed.legacy_dedupe_key
    assert set(MailboxMessage.objects.values_list("message_id", flat=True)) == {before.pk}
    assert set(MailboxMessage.objects.values_list("dedupe_key", flat=True)) == {
        parsed.legacy_dedupe_key
    }


@pytestmark_db
def test_a_tombstone_under_a_v1_key_still_keeps_the_message_out(two_inboxes, account):
    sales, _ = two_inboxes
    raw = make_email(subject="Deleted before v2", to="sales@acme.example.com")
    Tombstone.objects.create(account=account, dedupe_key=parse_message(raw).legacy_dedupe_key)

    ingest(sales, raw)

    assert not Message.objects.exists()
    assert MailboxMessage.objects.get().message_id is None


@pytestmark_db
def test_the_sent_copy_of_an_email_queued_before_v2_is_recognised_not_imported(account, admin):
    from django.db import transaction

    from inboxes.outbox import Recipient, outbox_create

    address = "ann@acme.example.com"
    mailbox = Mailbox.objects.create(
        account=account, kind="personal", owner=admin, address=address, canonical_address=address
    )
    sent = MailboxFolder.objects.create(mailbox=mailbox, role="sent", name="Sent")
    with transaction.atomic():
        item = outbox_create(
            mailbox=mailbox,
            from_name="Ann",
            to=[Recipient("dan@customer.example.com")],
            subject="Offer",
            text="Here is our offer.",
        )
    with item.message.raw.open("rb") as stored:
        raw = stored.read()
    # Queued (and stored) before v2 keys: its row has the v1 key.
    Message.objects.filter(pk=item.message_id).update(
        dedupe_key=parse_message(raw).legacy_dedupe_key
    )

    ingest(sent, raw)  # the copy in the Sent folder, synced after the upgrade

    assert list(Message.objects.values_list("pk", flat=True)) == [item.message_id]
    assert MailboxMessage.objects.get(folder=sent).message_id == item.message_id
