"""core/bulk.py: the rows COPY writes are the rows bulk_create would write."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.db import DataError, IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext

from core import bulk
from inboxes.models import Message, Tombstone
from tests.support.factories import AccountFactory

pytestmark = pytest.mark.django_db(transaction=True)

FIELDS = [f.attname for f in Message._meta.concrete_fields]


def awkward_message(account, n: int) -> Message:
    """Values that text escaping gets wrong if anything does."""
    return Message(
        account=account,
        dedupe_key=f"key-{n}",
        message_id=f"<{n}@example.com>",
        references=[f"<a{n}@x>", 'quote " and back\\slash', "ünïcødé ✉"],
        subject=f'Re: "quotes", \\backslashes\\ and {{braces}} #{n}',
        from_name="Zoë O'Brien",
        from_address=f"zoe{n}@example.com",
        to=[{"name": 'A "B" C', "address": "abc@example.com"}],
        cc=[],
        sent_at=datetime(2026, 11, 28, 12, n % 60, tzinfo=UTC),
        text="line one\nline two\ttab \\N not null\r\n" * 50,
        html='<p class="x" style="a:b">Hi &amp; bye</p>' * 100,
        has_remote_images=bool(n % 2),
        headers={"subject": "x", "received": ["a", "b"], "empty": ""},
        raw_size=1234 + n,
    )


def row(message: Message) -> dict:
    return {name: getattr(message, name) for name in FIELDS if name != "raw"} | {
        "raw": message.raw.name
    }


@pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="COPY is PostgreSQL's; elsewhere bulk_insert is bulk_create, tested by the other tests",
)
def test_copy_writes_exactly_what_bulk_create_writes():
    account = AccountFactory()
    copied = [awkward_message(account, n) for n in range(5)]
    copied[0].raw.name = "raw/x/ab/abc.eml"
    with CaptureQueriesContext(connection) as statements:
        bulk.bulk_insert(Message, copied)
    assert not any("INSERT" in q["sql"] for q in statements)  # COPY, not the fallback
    assert all(not m._state.adding for m in copied)

    # The same values through Django's own bulk_create, for comparison.
    created = [awkward_message(account, n) for n in range(5, 10)]
    Message.objects.bulk_create(created)

    for made, via in ((copied, "copy"), (created, "bulk_create")):
        for message in made:
            stored = Message.objects.get(pk=message.pk)
            assert row(stored) == row(message), via
    stored = Message.objects.get(pk=copied[3].pk)
    assert stored.references[1] == 'quote " and back\\slash'
    assert stored.text.startswith("line one\nline two\ttab \\N not null\r\n")
    assert stored.created_at is not None and stored.updated_at is not None


def test_a_conflict_keeps_the_stored_row_and_inserts_the_others_when_told_to():
    account = AccountFactory()
    first = awkward_message(account, 1)
    bulk.bulk_insert(Message, [first])
    again = awkward_message(account, 1)  # the same dedupe key, another id
    again.subject = "a second copy"
    others = [awkward_message(account, n) for n in (2, 3)]

    with transaction.atomic():
        bulk.bulk_insert(Message, [again, *others], ignore_conflicts=True)
        # the caller's transaction is still usable after the fallback
        assert Message.objects.filter(account=account).count() == 3

    assert Message.objects.get(account=account, dedupe_key="key-1").subject == first.subject
    assert not Message.objects.filter(pk=again.pk).exists()


def test_a_conflict_raises_when_not_told_to_ignore_it():
    account = AccountFactory()
    bulk.bulk_insert(Message, [awkward_message(account, 1)])
    with pytest.raises(IntegrityError):
        bulk.bulk_insert(Message, [awkward_message(account, 4), awkward_message(account, 1)])
    assert Message.objects.filter(account=account).count() == 1


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="a NUL byte in text is refused by PostgreSQL only"
)
def test_a_value_the_server_refuses_gets_bulk_creates_error():
    account = AccountFactory()
    broken = awkward_message(account, 1)
    broken.subject = "nul \x00 byte"
    with pytest.raises(DataError, match="NUL"):
        bulk.bulk_insert(Message, [broken])
    assert not Message.objects.filter(account=account).exists()


def test_rows_whose_ids_the_database_hands_out_get_them_as_with_bulk_create():
    account = AccountFactory()
    tombstones = [Tombstone(account=account, dedupe_key=f"gone-{n}") for n in range(3)]

    with (
        transaction.atomic(),  # so that a COPY tried first would show as a savepoint
        CaptureQueriesContext(connection) as statements,
    ):
        bulk.bulk_insert(Tombstone, tombstones)

    # straight to bulk_create (its INSERT ... RETURNING), no COPY tried and undone
    sqls = [q["sql"] for q in statements]
    assert not any("SAVEPOINT" in sql for sql in sqls), sqls
    assert any("INSERT" in sql for sql in sqls), sqls

    assert all(tombstone.pk is not None for tombstone in tombstones)
    assert sorted(Tombstone.objects.filter(account=account).values_list("pk", flat=True)) == (
        sorted(tombstone.pk for tombstone in tombstones)
    )


def test_a_value_that_cannot_be_encoded_raises_and_leaves_nothing_behind():
    """A JSON value of a type the encoder rejects: the COPY fails in Python and is
    undone, bulk_create gets its turn and raises what it always raised; nothing is
    stored and the connection goes on."""
    account = AccountFactory()
    fine, odd = awkward_message(account, 1), awkward_message(account, 2)
    odd.headers = {"when": object()}

    with pytest.raises(TypeError, match="not JSON serializable"), transaction.atomic():
        bulk.bulk_insert(Message, [fine, odd])

    assert not Message.objects.filter(account=account).exists()
    bulk.bulk_insert(Message, [awkward_message(account, 1)])  # the connection is fine
    assert Message.objects.filter(account=account).count() == 1
