"""Database settings that the migrations make and the code counts on."""

from __future__ import annotations

import pytest
from django.db import connection

from inboxes.models import Message
from tests.support.factories import AccountFactory

pytestmark = pytest.mark.django_db


@pytest.mark.skipif(connection.vendor != "postgresql", reason="a PostgreSQL storage setting")
def test_message_bodies_are_compressed_with_lz4():
    """pglz made inserting bodies the database's main cost (migration 0007)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT attname, attcompression FROM pg_attribute "
            "WHERE attrelid = 'conversations_message'::regclass AND attname = ANY(%s)",
            [["text", "html", "headers"]],
        )
        methods = dict(cursor.fetchall())
    assert methods == {"text": "l", "html": "l", "headers": "l"}

    # A long, compressible body really is stored compressed that way, and reads back.
    body = "Dear customer, thank you for your order. " * 2_000
    message = Message.objects.create(account=AccountFactory(), dedupe_key="k" * 64, text=body)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_column_compression(text) FROM conversations_message WHERE id = %s",
            [message.pk],
        )
        assert cursor.fetchone()[0] == "lz4"
    assert Message.objects.get(pk=message.pk).text == body
