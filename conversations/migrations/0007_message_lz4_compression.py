"""Message bodies and headers compressed with LZ4 instead of PostgreSQL's pglz.

Inserting the long text columns of a message (the body as text, the sanitised HTML,
the headers) spends most of the database's CPU in pglz compression: with LZ4 the
server's CPU for inserting 100 messages of the benchmark corpus drops from ~40 to
~23 ms (bench/insert.py), and reading them back is faster too. Only new values are
compressed with it; the old ones stay readable. PostgreSQL 14 and later, when built
with LZ4 (Debian's and the official images are); any other database, or a server
without it, keeps its default.
"""

from django.db import DatabaseError, migrations, transaction

TABLE = "conversations_message"
COLUMNS = ("text", "html", "headers", "subject", "references", "to", "cc")


def _set_compression(schema_editor, method: str) -> None:
    connection = schema_editor.connection
    if connection.vendor != "postgresql" or connection.pg_version < 140000:
        return
    quote = schema_editor.quote_name
    statements = [
        f"ALTER TABLE {quote(TABLE)} ALTER COLUMN {quote(column)} SET COMPRESSION {method}"
        for column in COLUMNS
    ]
    try:
        with transaction.atomic(using=connection.alias):
            with connection.cursor() as cursor:
                for statement in statements:
                    cursor.execute(statement)
    except DatabaseError:  # "compression method lz4 not supported": keep pglz
        pass


def use_lz4(apps, schema_editor):
    _set_compression(schema_editor, "lz4")


def use_default(apps, schema_editor):
    _set_compression(schema_editor, "default")


class Migration(migrations.Migration):
    dependencies = [("conversations", "0006_conversation_summary_and_nav_counts")]

    operations = [migrations.RunPython(use_lz4, use_default, elidable=True)]
