"""Trigram indexes for the contacts search (``?search=`` over name, email, company).

Django's ``icontains`` on PostgreSQL compares ``UPPER(column::text) LIKE UPPER(%s)``,
so the indexes are on that expression: a search for a rare word reads the index
instead of every contact of the account (bench/crm_contacts.py). Nothing on SQLite.
"""

from django.db import migrations

COLUMNS = ("name", "email", "company")


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    for column in COLUMNS:
        schema_editor.execute(
            f"CREATE INDEX IF NOT EXISTS crm_contact_{column}_trgm ON crm_contact "
            f'USING gin ((UPPER("{column}"::text)) gin_trgm_ops)'
        )


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for column in COLUMNS:
        schema_editor.execute(f"DROP INDEX IF EXISTS crm_contact_{column}_trgm")


class Migration(migrations.Migration):
    dependencies = [("crm", "0001_initial")]

    operations = [migrations.RunPython(create, drop)]
