"""OutboxItem.marks_epoch, and on PostgreSQL the unlogged one-row table that holds the
database server's durability epoch (inboxes/outbox/epoch.py)."""

from django.db import migrations, models

EPOCH_TABLE = "inboxes_outbox_epoch"


def create_epoch_table(apps, schema_editor):
    # UNLOGGED: crash recovery (a server or machine crash, also a backend crash that
    # makes the postmaster reinitialise) empties it, a clean shutdown keeps it. Not a
    # model: Django makes no unlogged tables, and tests must not flush it.
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            f"CREATE UNLOGGED TABLE IF NOT EXISTS {EPOCH_TABLE} "
            "(id smallint PRIMARY KEY CHECK (id = 1), token text NOT NULL)"
        )


def drop_epoch_table(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP TABLE IF EXISTS {EPOCH_TABLE}")


class Migration(migrations.Migration):
    dependencies = [
        ("inboxes", "0006_sync_state_history"),
    ]

    operations = [
        migrations.AddField(
            model_name="outboxitem",
            name="marks_epoch",
            field=models.CharField(blank=True, default="", max_length=80),
        ),
        migrations.RunPython(create_epoch_table, drop_epoch_table),
    ]
