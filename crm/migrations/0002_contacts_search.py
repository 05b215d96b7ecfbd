"""Trigram indexes for the contacts search (``?search=`` over name, email, company).

Django's ``icontains`` on PostgreSQL compares ``UPPER(column::text) LIKE UPPER(%s)``,
so the indexes are on that expression: a search for a rare word reads the index
instead of every contact of the account (bench/crm_contacts.py). Nothing on SQLite.

The planner chooses between these indexes and walking the newest contacts until a page
is full, by how many contacts it expects to match. With the default statistics (100
histogram entries) it cannot tell a word matching 20 contacts from one matching 1,000
among 100,000, walked all of them for the rarer ones and took 100-200 ms; 1,000 entries
per expression make those estimates right (ANALYZE reads 300,000 rows for them).
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
        schema_editor.execute(
            f"ALTER INDEX crm_contact_{column}_trgm ALTER COLUMN 1 SET STATISTICS 1000"
        )


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for column in COLUMNS:
        schema_editor.execute(f"DROP INDEX IF EXISTS crm_contact_{column}_trgm")


class Migration(migrations.Migration):
    dependencies = [("crm", "0001_initial")]

    operations = [migrations.RunPython(create, drop)]
